//! What a function builds once per cold start: the catalog, the SDK client,
//! the ledger over DynamoDB.

use std::sync::Arc;

use ledger_domain::{Catalog, DomainError, SystemClock};
use ledger_store::DynamoLedgerStore;

use crate::Ledger;

pub type DynamoLedger = Ledger<DynamoLedgerStore>;

/// The deployment's catalog: `LEDGER_CATALOG_FILE` (a JSON file, e.g. for
/// local runs) or else `LEDGER_CATALOG`, the name of a catalog shipped under
/// `infra/catalogs/` (`default` when unset). Validated here: a bad catalog
/// stops the function at start-up with a clear error.
pub fn catalog_from_env() -> Result<Catalog, DomainError> {
    if let Ok(path) = std::env::var("LEDGER_CATALOG_FILE") {
        if !path.trim().is_empty() {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| DomainError::InvalidCatalog(format!("reading {path}: {e}")))?;
            return Catalog::from_json(&json).map_err(|e| DomainError::InvalidCatalog(format!("{path}: {e}")));
        }
    }
    match std::env::var("LEDGER_CATALOG") {
        Ok(name) if !name.trim().is_empty() => Catalog::shipped(name.trim()),
        _ => Ok(Catalog::default_catalog()),
    }
}

/// The ledger from the Lambda environment: `TABLE_NAME`, the catalog (see
/// [`catalog_from_env`]), SDK config as usual (`AWS_ENDPOINT_URL_DYNAMODB`
/// points it at DynamoDB Local). It starts export jobs and links their
/// files; [`exports_from_env`] also writes them.
pub async fn from_env() -> Result<DynamoLedger, Box<dyn std::error::Error + Send + Sync>> {
    ledger_from_env(|_, files| files).await
}

/// The exports function's ledger: the one above, with an S3 client to write
/// export files (the only function that links the S3 SDK).
pub async fn exports_from_env() -> Result<DynamoLedger, Box<dyn std::error::Error + Send + Sync>> {
    ledger_from_env(|config, files| files.with_uploads(ledger_store::ExportFiles::s3_client(config))).await
}

/// `uploads` is generic, not a flag: the other functions' binary never
/// references the S3 client, so the linker leaves the S3 SDK out of it.
async fn ledger_from_env<U>(uploads: U) -> Result<DynamoLedger, Box<dyn std::error::Error + Send + Sync>>
where
    U: FnOnce(&aws_types::SdkConfig, ledger_store::ExportFiles) -> ledger_store::ExportFiles,
{
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME is not set")?;
    let catalog = catalog_from_env()?;
    let config = sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let ledger = dynamo_ledger(client, &table, Arc::new(catalog), Arc::new(SystemClock));
    Ok(match export_files(&config) {
        Some(files) => ledger.with_exports(uploads(&config, files)),
        None => ledger,
    })
}

/// Where history exports go, for the functions that start or link them:
/// `EXPORT_BUCKET` and `EXPORT_QUEUE_URL` (`AWS_ENDPOINT_URL_S3` points S3
/// at moto locally).
pub fn export_files(config: &aws_types::SdkConfig) -> Option<ledger_store::ExportFiles> {
    let bucket = std::env::var("EXPORT_BUCKET").ok()?;
    let queue = std::env::var("EXPORT_QUEUE_URL").ok()?;
    Some(ledger_store::ExportFiles::new(
        config,
        &bucket,
        aws_sdk_sqs::Client::new(config),
        &queue,
    ))
}

/// The SDK configuration from the environment, as Lambda sets it: region
/// (`AWS_REGION`), the function role's credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and endpoints
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`: DynamoDB Local and
/// moto locally). Built by hand rather than by aws-config, whose provider
/// chains (profile files, IMDS, SSO, STS) a function never uses: a smaller
/// binary, and no file read at init. With it, the one HTTPS client every
/// SDK client of this process shares: rustls on ring (the SDKs' default is
/// aws-lc, the larger library), trusting the roots AWS endpoints chain to
/// ([`AWS_ROOTS`]) rather than every file of the system's certificate
/// directory, whose reading and parsing was most of a cold start's init.
/// `LEDGER_TLS_ROOTS=system` trusts the system's certificates instead.
pub async fn sdk_config() -> aws_types::SdkConfig {
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
    use aws_smithy_async::time::{SharedTimeSource, SystemTimeSource};
    use aws_smithy_http_client::tls;

    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let roots = match env("LEDGER_TLS_ROOTS").as_deref() {
        Some("system") => tls::TrustStore::default(),
        _ => tls::TrustStore::empty().with_pem_certificate(AWS_ROOTS),
    };
    let context = tls::TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .expect("a trust store of certificates alone");
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .tls_context(context)
        .build_https();
    let mut config = aws_types::SdkConfig::builder()
        .behavior_version(aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest())
        .http_client(https)
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .time_source(SharedTimeSource::new(SystemTimeSource::new()))
        .retry_config(aws_smithy_types::retry::RetryConfig::standard())
        // An attempt that gets no answer is given up and retried (on
        // another connection) instead of holding the function until its
        // own timeout: every write is conditioned, so a retry of one that
        // did commit finds it done.
        .timeout_config(
            aws_smithy_types::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_millis(3_100))
                .operation_attempt_timeout(std::time::Duration::from_secs(5))
                .build(),
        )
        .service_config(EnvServiceConfig);
    if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        config = config.region(aws_types::region::Region::new(region));
    }
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        let credentials =
            aws_credential_types::Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment");
        config = config.credentials_provider(SharedCredentialsProvider::new(credentials));
    }
    if let Some(endpoint) = env("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(endpoint);
    }
    config.build()
}

/// The root certificates of the endpoints the functions call (DynamoDB,
/// SQS, S3, EventBridge): Amazon Trust Services' roots, the Starfield root
/// that cross-signs them, and DigiCert's global roots.
pub const AWS_ROOTS: &[u8] = include_bytes!("aws-roots.pem");

/// Service settings from the environment, as aws-config reads them:
/// `<NAME>_<SERVICE ID>` (e.g. `AWS_ENDPOINT_URL_DYNAMODB`); the global
/// `<NAME>` is already on the config.
#[derive(Debug)]
struct EnvServiceConfig;

impl aws_types::service_config::LoadServiceConfig for EnvServiceConfig {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        let service = key.service_id().to_uppercase().replace([' ', '-'], "_");
        std::env::var(format!("{}_{service}", key.env()))
            .ok()
            .filter(|v| !v.trim().is_empty())
    }
}

pub fn dynamo_ledger(
    client: aws_sdk_dynamodb::Client,
    table: &str,
    catalog: Arc<Catalog>,
    clock: Arc<dyn ledger_domain::Clock>,
) -> DynamoLedger {
    Ledger::new(DynamoLedgerStore::new(client, table), catalog, clock)
}

/// The event bus from the Lambda environment: `EVENT_BUS_NAME`, SDK config
/// as usual (`AWS_ENDPOINT_URL_EVENTBRIDGE` points it at moto locally).
pub async fn bus_from_env() -> Result<ledger_store::EventBridgeBus, Box<dyn std::error::Error + Send + Sync>> {
    let bus = std::env::var("EVENT_BUS_NAME").map_err(|_| "EVENT_BUS_NAME is not set")?;
    let config = sdk_config().await;
    Ok(ledger_store::EventBridgeBus::new(
        aws_sdk_eventbridge::Client::new(&config),
        &bus,
    ))
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    /// The HTTPS client panics on a trust store that does not parse: every
    /// root of the bundle must, and all seven are there.
    #[test]
    fn the_aws_roots_parse_as_seven_certificates() {
        let certificates: Vec<CertificateDer> = CertificateDer::pem_slice_iter(super::AWS_ROOTS)
            .collect::<Result<_, _>>()
            .expect("PEM certificates");
        assert_eq!(certificates.len(), 7);
        let mut roots = rustls::RootCertStore::empty();
        for der in certificates {
            roots.add(der).expect("a trust anchor rustls takes");
        }
        assert_eq!(roots.len(), 7);
    }
}
