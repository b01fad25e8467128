//! Counting what reaches DynamoDB: an SDK interceptor that counts every
//! HTTP request the client transmits (retries included), per operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<Mutex<BTreeMap<String, usize>>>);

impl RequestCounter {
    pub fn total(&self) -> usize {
        self.0.lock().expect("counter lock").values().sum()
    }

    /// Requests per operation (`TransactWriteItems`, `GetItem`, ...).
    pub fn by_operation(&self) -> BTreeMap<String, usize> {
        self.0.lock().expect("counter lock").clone()
    }

    pub fn reset(&self) {
        self.0.lock().expect("counter lock").clear();
    }

    /// A DynamoDB client on `config` whose requests this counter counts.
    pub fn client(&self, config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        let conf = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The operation is named by the X-Amz-Target header: DynamoDB_20120810.GetItem.
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_string();
        *self.0.lock().expect("counter lock").entry(operation).or_default() += 1;
        Ok(())
    }
}
