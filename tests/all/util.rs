//! Helpers that make a new test a line or two: the shared ones come from
//! `donut-testkit` (also the benchmarks'); what only tests need is here.

use donut_host::backend::Backend;
pub use donut_testkit::{
    Dynoxide, Harness, components, dynamo_options, fill, guest_path, host_bin, stderr, stdout,
};

/// The operator's bearer token in tests' tenants files (`/metrics`
/// answers only to it).
pub const OPERATOR_TOKEN: &str = "operator-token-of-the-tests";

/// The `[service]` line that makes [`OPERATOR_TOKEN`] the operator's.
pub fn operator_line() -> String {
    use donut_host::service::config::{to_hex, token_sha256};
    format!(
        "operator_token_sha256 = \"{}\"\n",
        to_hex(&token_sha256(OPERATOR_TOKEN))
    )
}

/// Declares each listed test body once per backend:
/// `backend_tests!(persists_across_calls, ...)` with
/// `async fn persists_across_calls(h: Harness)` in scope.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::util::Harness::memory()).await
                }
            )*
        }
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::util::Harness::local()).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::util::Harness::dynamodb().await).await
                }
            )*
        }
    };
}

/// Creates `table` with a key schema DonutDB must refuse: partition key
/// `key_name` (S) only, no sort key.
pub async fn create_wrong_schema_table(endpoint: &str, table: &str, key_name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let options = dynamo_options(endpoint, table);
    let (client, _) = donut_host::backend::dynamo::client(&options, Vec::new())
        .await
        .expect("client");
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key_name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key_name)
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the wrong table");
}

/// Makes the next `n` commits land but answer "unavailable": the ambiguous
/// outcome of a request whose reply was lost.
pub struct AmbiguousCommits<B> {
    pub inner: B,
    pub next: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl<B: Backend> donut_host::backend::Layer for AmbiguousCommits<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn commit(
        &self,
        commit: donut_host::backend::Commit<'_>,
        meta: donut_host::backend::Meta,
    ) -> Result<(), donut_host::backend::PutMetaError> {
        use std::sync::atomic::Ordering;
        let ambiguous = self
            .next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        self.inner.commit(commit, meta).await?;
        if ambiguous {
            return Err(donut_host::backend::BackendError::Unavailable(
                "injected: the reply was lost".into(),
            )
            .into());
        }
        Ok(())
    }
}
