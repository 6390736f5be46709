//! `donut-host create-table --table NAME`: creates the DynamoDB table.

use anyhow::Result;
use donut_host::backend::dynamo::{DynamoOptions, create_table};

pub async fn run(options: &DynamoOptions) -> Result<i32> {
    create_table(options).await?;
    eprintln!(
        "created table {:?} (hash_key S, range_key N, on-demand)",
        options.table
    );
    Ok(0)
}
