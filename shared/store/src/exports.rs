//! Export jobs: a filtered history too long for one response, written to
//! S3 as one CSV in parts by the exports function. A job's progress is an
//! item of the organization (`EXPORT#<id>`): the multipart upload, the
//! parts uploaded and where in the history the next part starts. Each part
//! is checkpointed conditionally on the parts as read, so a redelivered or
//! doubled run never records a part twice, and a run cut off by its
//! deadline loses only what it had not checkpointed, which the next run
//! reads again.

use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use ledger_domain::{ActionId, Actor, CampaignId, OrgId, UserId};

use crate::dynamo::DynamoLedgerStore;
use crate::items::{caller_name, caller_of, instant, key, n, org_pk, parse_instant, s, Attrs, Item};
use crate::port::{HistoryFilter, HistoryKey, HistoryPosition, StoreError};

/// How long a finished export (its job and its file) is kept.
pub const EXPORT_DAYS: i64 = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportState {
    Running,
    Done,
}

impl ExportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::Running => "running",
            ExportState::Done => "done",
        }
    }
}

/// One export: what it lists, for whom, and how far it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportJob {
    pub org: OrgId,
    pub id: String,
    /// The request that started it, as its filter reads: the same key with
    /// another filter is another request.
    pub request: String,
    pub filter: HistoryFilter,
    /// Whose view of the history it exports (a member: their own entries).
    pub viewer: Actor,
    pub state: ExportState,
    /// The file's key in the export bucket.
    pub object: String,
    /// The multipart upload, once begun.
    pub upload: Option<String>,
    /// ETags of the parts uploaded, in order.
    pub parts: Vec<String>,
    /// Where the next part starts (`None`: at the newest entry, or, once
    /// done, nowhere).
    pub after: Option<HistoryPosition>,
    pub rows: u64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn export_sk(id: &str) -> String {
    format!("EXPORT#{id}")
}

fn by_text(by: &Option<HistoryKey>) -> Option<String> {
    by.as_ref().map(|k| match k {
        HistoryKey::Action(a) => format!("action={a}"),
        HistoryKey::User(u) => format!("user={u}"),
        HistoryKey::Campaign(c) => format!("campaign={c}"),
    })
}

fn by_of(text: &str) -> Option<HistoryKey> {
    let (kind, value) = text.split_once('=')?;
    Some(match kind {
        "action" => HistoryKey::Action(ActionId::parse(value).ok()?),
        "user" => HistoryKey::User(UserId::parse(value).ok()?),
        "campaign" => HistoryKey::Campaign(CampaignId::parse(value).ok()?),
        _ => return None,
    })
}

pub fn export_item(job: &ExportJob) -> Item {
    let mut item = key(org_pk(&job.org), export_sk(&job.id));
    item.insert("request".into(), s(&job.request));
    item.insert("state".into(), s(job.state.as_str()));
    item.insert("object".into(), s(&job.object));
    item.insert("rows".into(), n(job.rows));
    item.insert("caller".into(), s(caller_name(job.viewer.caller)));
    item.insert("created_at".into(), s(instant(job.created_at)));
    let expires = job.finished_at.unwrap_or(job.created_at) + chrono::Duration::days(EXPORT_DAYS);
    item.insert("expires_at_epoch".into(), n(expires.timestamp()));
    let optional = [
        ("user", job.viewer.user.as_ref().map(|u| u.to_string())),
        ("upload", job.upload.clone()),
        ("after_placed", job.after.as_ref().map(|p| p.placed.clone())),
        ("after_sk", job.after.as_ref().map(|p| p.sk.clone())),
        ("filter_from", job.filter.from.map(instant)),
        ("filter_to", job.filter.to.map(instant)),
        ("filter_by", by_text(&job.filter.by)),
        ("finished_at", job.finished_at.map(instant)),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            item.insert(name.into(), s(v));
        }
    }
    // Never an empty list: DynamoDB Local's stream chokes on one.
    if !job.parts.is_empty() {
        item.insert("parts".into(), AttributeValue::L(job.parts.iter().map(s).collect()));
    }
    item
}

pub fn export_from_item(org: &OrgId, item: &Item) -> Result<ExportJob, StoreError> {
    let a = Attrs::of(item, "export");
    let id = a
        .s("sk")?
        .strip_prefix("EXPORT#")
        .ok_or_else(|| StoreError::Malformed("export key".into()))?
        .to_string();
    let state = match a.s("state")? {
        "running" => ExportState::Running,
        "done" => ExportState::Done,
        other => return Err(StoreError::Malformed(format!("export state {other:?}"))),
    };
    let after = match (a.opt_s("after_placed")?, a.opt_s("after_sk")?) {
        (Some(placed), Some(sk)) => Some(HistoryPosition {
            placed: placed.to_string(),
            sk: sk.to_string(),
        }),
        _ => None,
    };
    let parts = match item.get("parts") {
        Some(AttributeValue::L(l)) => l
            .iter()
            .map(|v| {
                v.as_s()
                    .cloned()
                    .map_err(|_| StoreError::Malformed("export part".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(ExportJob {
        org: org.clone(),
        id,
        request: a.s("request")?.to_string(),
        filter: HistoryFilter {
            from: a.opt_parsed("filter_from", parse_instant)?,
            to: a.opt_parsed("filter_to", parse_instant)?,
            by: a.opt_parsed("filter_by", by_of)?,
        },
        viewer: Actor {
            user: a.opt_parsed("user", |t| UserId::parse(t).ok())?,
            caller: a
                .opt_parsed("caller", caller_of)?
                .ok_or_else(|| StoreError::Malformed("caller".into()))?,
        },
        state,
        object: a.s("object")?.to_string(),
        upload: a.opt_s("upload")?.map(str::to_string),
        parts,
        after,
        rows: a.n("rows")?,
        created_at: a.opt_parsed("created_at", parse_instant)?.unwrap_or_default(),
        finished_at: a.opt_parsed("finished_at", parse_instant)?,
    })
}

impl DynamoLedgerStore {
    /// Keeps a new job, or answers the one its id already names.
    pub async fn create_export(&self, job: &ExportJob) -> Result<ExportJob, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(export_item(job)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(job.clone()),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                self.load_export(&job.org, &job.id)
                    .await?
                    .ok_or_else(|| StoreError::Request("an export vanished as it was created".into()))
            }
            Err(e) => Err(StoreError::Request(format!("{e:?}"))),
        }
    }

    pub async fn load_export(&self, org: &OrgId, id: &str) -> Result<Option<ExportJob>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(org), export_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Request(format!("{e:?}")))?;
        out.item.map(|item| export_from_item(org, &item)).transpose()
    }

    /// Records a job's progress, if nobody recorded any since `before` was
    /// read (its upload and its parts): `false` when someone did.
    pub async fn save_export(&self, before: &ExportJob, job: &ExportJob) -> Result<bool, StoreError> {
        let mut values = Item::new();
        let mut conditions = vec!["attribute_exists(pk)".to_string()];
        match before.parts.len() {
            0 => conditions.push("attribute_not_exists(parts)".into()),
            count => {
                conditions.push("size(parts) = :parts".into());
                values.insert(":parts".into(), n(count));
            }
        }
        match &before.upload {
            None => conditions.push("attribute_not_exists(upload)".into()),
            Some(upload) => {
                conditions.push("upload = :upload".into());
                values.insert(":upload".into(), s(upload));
            }
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(export_item(job)))
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                Ok(false)
            }
            Err(e) => Err(StoreError::Request(format!("{e:?}"))),
        }
    }
}

/// Where exports go: the bucket their files are written to, and the queue
/// that runs their jobs (a job that runs out of time queues its own
/// continuation).
///
/// Only the exports function writes files, so only it holds an S3 client
/// ([`ExportFiles::with_uploads`]); the functions that start jobs and hand
/// out links sign those links with SigV4 themselves, and their binary links
/// no S3 SDK (with its checksum tables, a third of the package).
#[derive(Clone, Debug)]
pub struct ExportFiles {
    uploads: Option<aws_sdk_s3::Client>,
    links: LinkSigner,
    bucket: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

fn s3_error<E: std::fmt::Debug>(e: E) -> StoreError {
    StoreError::Request(format!("{e:?}"))
}

/// The S3 endpoint set for this process (moto locally), if any.
fn s3_endpoint() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|e| !e.trim().is_empty())
}

impl ExportFiles {
    /// Starting jobs and linking their files; see [`ExportFiles::with_uploads`].
    pub fn new(config: &aws_types::SdkConfig, bucket: &str, sqs: aws_sdk_sqs::Client, queue_url: &str) -> Self {
        ExportFiles {
            uploads: None,
            links: LinkSigner::new(config, bucket),
            bucket: bucket.to_string(),
            sqs,
            queue_url: queue_url.to_string(),
        }
    }

    /// Writing the files too: the exports function's.
    pub fn with_uploads(mut self, s3: aws_sdk_s3::Client) -> Self {
        self.uploads = Some(s3);
        self
    }

    /// An S3 client for the SDK config: path-style addressing when an
    /// endpoint is set (moto on loopback has no bucket subdomains).
    pub fn s3_client(config: &aws_types::SdkConfig) -> aws_sdk_s3::Client {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(s3_endpoint().is_some())
            .build();
        aws_sdk_s3::Client::from_conf(s3)
    }

    fn s3(&self) -> Result<&aws_sdk_s3::Client, StoreError> {
        self.uploads
            .as_ref()
            .ok_or_else(|| StoreError::Request("only the exports function writes export files".into()))
    }

    /// Asks the exports function to run (or go on with) a job.
    pub async fn schedule(&self, org: &OrgId, id: &str) -> Result<(), StoreError> {
        let body = serde_json::json!({ "org": org.as_str(), "export": id }).to_string();
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    pub async fn begin(&self, object: &str) -> Result<String, StoreError> {
        let out = self
            .s3()?
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object)
            .content_type("text/csv; charset=utf-8")
            .content_disposition("attachment; filename=\"ledger.csv\"")
            .send()
            .await
            .map_err(s3_error)?;
        out.upload_id
            .ok_or_else(|| StoreError::Request("S3 began an upload with no id".into()))
    }

    /// Uploads part `number` (from 1); answers its ETag.
    pub async fn upload_part(
        &self,
        object: &str,
        upload: &str,
        number: usize,
        bytes: Vec<u8>,
    ) -> Result<String, StoreError> {
        let out = self
            .s3()?
            .upload_part()
            .bucket(&self.bucket)
            .key(object)
            .upload_id(upload)
            .part_number(number as i32)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(s3_error)?;
        out.e_tag
            .ok_or_else(|| StoreError::Request("S3 took a part with no ETag".into()))
    }

    pub async fn complete(&self, object: &str, upload: &str, parts: &[String]) -> Result<(), StoreError> {
        let parts = parts
            .iter()
            .enumerate()
            .map(|(i, tag)| CompletedPart::builder().part_number(i as i32 + 1).e_tag(tag).build())
            .collect();
        self.s3()?
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(object)
            .upload_id(upload)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    /// A link that downloads the file for `valid` without credentials.
    pub async fn link(&self, object: &str, valid: Duration) -> Result<String, StoreError> {
        self.links
            .presign_get(object, valid, std::time::SystemTime::now())
            .await
    }
}

/// Presigned GET links for one bucket (SigV4, query-string form), as S3's
/// own presigner makes them: virtual-hosted on AWS, path-style under a
/// local endpoint.
#[derive(Clone, Debug)]
struct LinkSigner {
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    region: String,
    /// Everything before the object's key.
    base: String,
}

/// What SigV4 leaves unencoded in a path segment or a query value.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl LinkSigner {
    fn new(config: &aws_types::SdkConfig, bucket: &str) -> Self {
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let base = match s3_endpoint() {
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        LinkSigner {
            credentials: config.credentials_provider(),
            region,
            base,
        }
    }

    async fn presign_get(
        &self,
        object: &str,
        valid: Duration,
        at: std::time::SystemTime,
    ) -> Result<String, StoreError> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{
            sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
            UriPathNormalizationMode,
        };
        use percent_encoding::utf8_percent_encode;

        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| StoreError::Request("no credentials to sign an export link".into()))?;
        let identity = provider.provide_credentials().await.map_err(s3_error)?.into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(valid);
        // S3 takes the path as written: encoded once, never normalised.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(at)
            .settings(settings)
            .build()
            .map_err(s3_error)?
            .into();
        let key: Vec<String> = object
            .split('/')
            .map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string())
            .collect();
        // The operation named in the query, as S3's presigner names it.
        let url = format!("{}/{}?x-id=GetObject", self.base, key.join("/"));
        let request = SignableRequest::new("GET", url.as_str(), std::iter::empty(), SignableBody::UnsignedPayload)
            .map_err(s3_error)?;
        let (_, query) = sign(request, &params).map_err(s3_error)?.into_parts().0.into_parts();
        let query: Vec<String> = query
            .iter()
            .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, UNRESERVED)))
            .collect();
        Ok(format!("{url}&{}", query.join("&")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use aws_sdk_s3::presigning::PresigningConfig;

    use super::LinkSigner;

    /// Our SigV4 link against the S3 SDK's presigner, same credentials,
    /// instant and object, virtual-hosted and path-style: the same URL.
    #[tokio::test]
    async fn an_export_link_is_the_one_s3s_own_presigner_makes() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG",
            Some("session+token/=".into()),
            None,
            "test",
        );
        let config = aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .behavior_version(aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest())
            .build();
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let valid = Duration::from_secs(900);
        let object = "exports/acme/20261130T101500.123456-a1b2.csv";
        for endpoint in [None, Some("http://127.0.0.1:5000")] {
            let base = match endpoint {
                Some(e) => format!("{e}/ledger-exports"),
                None => "https://ledger-exports.s3.eu-west-1.amazonaws.com".to_string(),
            };
            let ours = LinkSigner {
                credentials: config.credentials_provider(),
                region: "eu-west-1".into(),
                base,
            }
            .presign_get(object, valid, at)
            .await
            .unwrap();
            let mut s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(endpoint.is_some());
            if let Some(e) = endpoint {
                s3 = s3.endpoint_url(e);
            }
            let presigning = PresigningConfig::builder()
                .start_time(at)
                .expires_in(valid)
                .build()
                .unwrap();
            let theirs = aws_sdk_s3::Client::from_conf(s3.build())
                .get_object()
                .bucket("ledger-exports")
                .key(object)
                .presigned(presigning)
                .await
                .unwrap();
            let sorted = |url: &str| {
                let (path, query) = url.split_once('?').unwrap();
                let mut params: Vec<String> = query.split('&').map(str::to_string).collect();
                params.sort();
                (path.to_string(), params)
            };
            assert_eq!(sorted(&ours), sorted(theirs.uri()), "{endpoint:?}");
        }
    }
}
