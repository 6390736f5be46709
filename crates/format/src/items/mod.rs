//! How backends lay DonutDB's items out in what they store: the DynamoDB
//! table's keys and attributes ([`dynamo`]) and the local store's files
//! ([`local`]). Backends move these bytes; only this crate knows them
//! (docs/format.md, "Local backend" and "DynamoDB backend").

pub mod dynamo;
pub mod local;
