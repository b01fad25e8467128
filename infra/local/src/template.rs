//! Reads `template.yaml`, the deployable truth: the local stack creates the
//! tables and queues and serves the routes it defines, and keeps no copy.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use serde_yaml::Value;

pub struct Template {
    root: Value,
}

/// An HTTP API route and the function (its `LEDGER_FUNCTION`) that serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, ... or `ANY`.
    pub method: String,
    /// `/v1/orgs/{org}/spend`, or `$default`.
    pub path: String,
    pub function: String,
    /// The JWT authorizer's `AuthorizationScopes` for the route: a token
    /// must carry one of them (empty: any valid token).
    pub scopes: Vec<String>,
}

impl Route {
    /// API Gateway's route key: `POST /v1/orgs/{org}/spend` or `$default`.
    pub fn key(&self) -> String {
        if self.path == "$default" {
            "$default".into()
        } else {
            format!("{} {}", self.method, self.path)
        }
    }
}

/// A queue and, if it has one, the logical id of its dead-letter queue.
#[derive(Clone, Debug)]
pub struct QueueDef {
    pub logical_id: String,
    pub dead_letter: Option<String>,
    pub max_receive_count: Option<u64>,
    pub visibility_timeout: Option<u64>,
}

fn str_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Tagged(t) => str_of(&t.value),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(str_of)
        .map(str::to_string)
        .collect()
}

impl Template {
    pub fn load(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Template::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Template> {
        Ok(Template {
            root: serde_yaml::from_str(text).context("parsing template.yaml")?,
        })
    }

    fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources().filter(move |(_, r)| r["Type"].as_str() == Some(ty))
    }

    /// Every `HttpApi` event of every function, with the binary that serves it.
    pub fn routes(&self) -> Result<Vec<Route>> {
        let mut routes = Vec::new();
        for (id, f) in self.of_type("AWS::Serverless::Function") {
            let Some(events) = f["Properties"]["Events"].as_mapping() else {
                continue;
            };
            // One binary serves every function; its LEDGER_FUNCTION says which.
            let function = f["Properties"]["Environment"]["Variables"]["LEDGER_FUNCTION"]
                .as_str()
                .ok_or_else(|| anyhow!("function {id} sets no LEDGER_FUNCTION"))?;
            for (_, event) in events {
                if event["Type"].as_str() != Some("HttpApi") {
                    continue;
                }
                let p = &event["Properties"];
                let (Some(method), Some(path)) = (p["Method"].as_str(), p["Path"].as_str()) else {
                    bail!("an HttpApi event of {id} lacks Method or Path");
                };
                // As SAM deploys them: the event's scopes replace the
                // default authorizer's.
                let scopes = match &p["Auth"]["AuthorizationScopes"] {
                    Value::Null => self.default_scopes(&p["ApiId"]),
                    listed => strings(listed),
                };
                routes.push(Route {
                    method: method.to_uppercase(),
                    path: path.to_string(),
                    function: function.to_string(),
                    scopes,
                });
            }
        }
        Ok(routes)
    }

    /// The `AuthorizationScopes` of the default authorizer of the HTTP API
    /// an event names (`ApiId: !Ref LedgerApi`).
    fn default_scopes(&self, api_id: &Value) -> Vec<String> {
        let Some((_, api)) = str_of(api_id).and_then(|id| self.resources().find(|(r, _)| *r == id)) else {
            return Vec::new();
        };
        let auth = &api["Properties"]["Auth"];
        match auth["DefaultAuthorizer"].as_str() {
            Some(name) => strings(&auth["Authorizers"][name]["AuthorizationScopes"]),
            None => Vec::new(),
        }
    }

    /// The binary that runs the function whose `LEDGER_FUNCTION` is
    /// `function` (its `BuildProperties.Binary`, what `sam build` packages).
    pub fn binary_of(&self, function: &str) -> Result<String> {
        self.of_type("AWS::Serverless::Function")
            .find(|(_, f)| f["Properties"]["Environment"]["Variables"]["LEDGER_FUNCTION"].as_str() == Some(function))
            .and_then(|(_, f)| f["Metadata"]["BuildProperties"]["Binary"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no function of template.yaml runs {function} with a Binary"))
    }

    pub fn table_ids(&self) -> Vec<String> {
        self.of_type("AWS::DynamoDB::Table")
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// A `CreateTable` request for a table of the template, under `name`.
    pub async fn create_table(&self, client: &aws_sdk_dynamodb::Client, logical_id: &str, name: &str) -> Result<()> {
        let (_, table) = self
            .of_type("AWS::DynamoDB::Table")
            .find(|(id, _)| *id == logical_id)
            .ok_or_else(|| anyhow!("no table {logical_id} in the template"))?;
        let p = &table["Properties"];
        let key_schema = |v: &Value| -> Result<Vec<KeySchemaElement>> {
            v.as_sequence()
                .into_iter()
                .flatten()
                .map(|k| {
                    Ok(KeySchemaElement::builder()
                        .attribute_name(str_of(&k["AttributeName"]).unwrap_or_default())
                        .key_type(KeyType::from(str_of(&k["KeyType"]).unwrap_or_default()))
                        .build()?)
                })
                .collect()
        };
        let mut create = client
            .create_table()
            .table_name(name)
            .set_key_schema(Some(key_schema(&p["KeySchema"])?))
            .billing_mode(BillingMode::from(
                p["BillingMode"].as_str().unwrap_or("PAY_PER_REQUEST"),
            ));
        if let Some(view) = str_of(&p["StreamSpecification"]["StreamViewType"]) {
            create = create.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view))
                    .build()?,
            );
        }
        for a in p["AttributeDefinitions"].as_sequence().into_iter().flatten() {
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(str_of(&a["AttributeName"]).unwrap_or_default())
                    .attribute_type(ScalarAttributeType::from(
                        str_of(&a["AttributeType"]).unwrap_or_default(),
                    ))
                    .build()?,
            );
        }
        for g in p["GlobalSecondaryIndexes"].as_sequence().into_iter().flatten() {
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(
                    str_of(&g["Projection"]["ProjectionType"]).unwrap_or("ALL"),
                ))
                .build();
            create = create.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(str_of(&g["IndexName"]).unwrap_or_default())
                    .set_key_schema(Some(key_schema(&g["KeySchema"])?))
                    .projection(projection)
                    .build()?,
            );
        }
        create.send().await.with_context(|| format!("creating table {name}"))?;
        // TTL is recorded as configured; DynamoDB Local never deletes on it, so
        // expiry is enforced by conditions and sweeps, never by TTL.
        if let Some(attr) = str_of(&p["TimeToLiveSpecification"]["AttributeName"]) {
            let spec = TimeToLiveSpecification::builder()
                .attribute_name(attr)
                .enabled(true)
                .build()?;
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(spec)
                .send()
                .await?;
        }
        Ok(())
    }

    /// The buckets the template declares (logical ids).
    pub fn bucket_ids(&self) -> Vec<String> {
        self.of_type("AWS::S3::Bucket").map(|(id, _)| id.to_string()).collect()
    }

    /// Creates a bucket of the template on moto's S3, under `name` (one that
    /// exists already is kept: tests share one).
    pub async fn create_bucket(&self, client: &aws_sdk_s3::Client, logical_id: &str, name: &str) -> Result<()> {
        if !self.bucket_ids().iter().any(|b| b == logical_id) {
            bail!("template.yaml declares no bucket {logical_id}");
        }
        match client.create_bucket().bucket(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => Ok(()),
            Err(e) => Err(anyhow!("creating bucket {name}: {e:?}")),
        }
    }

    pub fn queues(&self) -> Vec<QueueDef> {
        self.of_type("AWS::SQS::Queue")
            .map(|(id, q)| {
                let p = &q["Properties"];
                let redrive = &p["RedrivePolicy"];
                let dead_letter = match &redrive["deadLetterTargetArn"] {
                    // !GetAtt Dlq.Arn
                    Value::Tagged(t) => str_of(&t.value).and_then(|s| s.split('.').next()).map(str::to_string),
                    _ => None,
                };
                QueueDef {
                    logical_id: id.to_string(),
                    dead_letter,
                    max_receive_count: redrive["maxReceiveCount"].as_u64(),
                    visibility_timeout: p["VisibilityTimeout"].as_u64(),
                }
            })
            .collect()
    }

    /// Creates the template's queues on moto's SQS: dead-letter queues
    /// first, then the queues that redrive to them. Returns (logical id, url).
    pub async fn create_queues(&self, client: &aws_sdk_sqs::Client, prefix: &str) -> Result<Vec<(String, String)>> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let mut queues = self.queues();
        queues.sort_by_key(|q| q.dead_letter.is_some());
        let mut created: Vec<(String, String)> = Vec::new();
        for q in queues {
            let mut create = client.create_queue().queue_name(format!("{prefix}{}", q.logical_id));
            if let Some(v) = q.visibility_timeout {
                create = create.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
            }
            if let Some(dlq) = &q.dead_letter {
                let (_, url) = created
                    .iter()
                    .find(|(id, _)| id == dlq)
                    .ok_or_else(|| anyhow!("no queue {dlq}"))?;
                let arn = client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send()
                    .await?
                    .attributes
                    .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
                    .ok_or_else(|| anyhow!("no arn for {dlq}"))?;
                let policy = serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": q.max_receive_count.unwrap_or(5) });
                create = create.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
            }
            let url = create.send().await?.queue_url.ok_or_else(|| anyhow!("no url"))?;
            created.push((q.logical_id, url));
        }
        Ok(created)
    }
}

/// The template's event bus created on moto's EventBridge, with a local
/// window onto it: a rule sending every ledger event to a queue of its own,
/// where the README's example (and the tests) read them.
#[derive(Clone, Debug)]
pub struct LocalBus {
    pub name: String,
    pub watch_queue_url: String,
}

impl Template {
    /// The event buses the template declares (logical ids).
    pub fn event_buses(&self) -> Vec<String> {
        self.of_type("AWS::Events::EventBus")
            .map(|(id, _)| id.to_string())
            .collect()
    }

    pub async fn create_event_bus(
        &self,
        events: &aws_sdk_eventbridge::Client,
        sqs: &aws_sdk_sqs::Client,
        logical_id: &str,
        name: &str,
    ) -> Result<LocalBus> {
        use aws_sdk_sqs::types::QueueAttributeName;
        if !self.event_buses().iter().any(|b| b == logical_id) {
            return Err(anyhow!("template.yaml declares no event bus {logical_id}"));
        }
        events.create_event_bus().name(name).send().await?;
        let watch = format!("{name}-watch");
        let url = sqs
            .create_queue()
            .queue_name(&watch)
            .send()
            .await?
            .queue_url
            .ok_or_else(|| anyhow!("no url"))?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| anyhow!("no arn for {watch}"))?;
        let pattern = serde_json::json!({ "source": [ledger_store::bus::EVENT_SOURCE] });
        events
            .put_rule()
            .event_bus_name(name)
            .name("watch")
            .event_pattern(pattern.to_string())
            .send()
            .await?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("watch-queue")
            .arn(arn)
            .build()?;
        events
            .put_targets()
            .event_bus_name(name)
            .rule("watch")
            .targets(target)
            .send()
            .await?;
        Ok(LocalBus {
            name: name.to_string(),
            watch_queue_url: url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_routes_tables_and_queues_from_the_project_template() {
        let t = Template::load(&crate::project_root().join("template.yaml")).unwrap();
        let routes = t.routes().unwrap();
        assert!(routes.contains(&Route {
            method: "POST".into(),
            path: "/v1/orgs/{org}/spend".into(),
            function: "spend".into(),
            scopes: vec![],
        }));
        let purchase = routes
            .iter()
            .find(|r| r.key() == "POST /v1/orgs/{org}/purchases")
            .unwrap();
        assert_eq!(purchase.scopes, vec![crate::SERVICE_SCOPE.to_string()]);
        assert!(routes.iter().any(|r| r.key() == "$default"));
        assert_eq!(t.table_ids(), vec!["LedgerTable".to_string()]);
        let dlq = t
            .queues()
            .into_iter()
            .find(|q| q.logical_id == "ResultsQueue")
            .unwrap()
            .dead_letter;
        assert_eq!(dlq.as_deref(), Some("ResultsDeadLetterQueue"));
    }
}
