//! The budget's counters in DynamoDB.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{BoxFuture, Counter, Counters};
use crate::store::dynamodb::{attr_u64, conditional_failed, s};
use crate::store::{DynamoCheckpointStore, StoreError};

/// The budget's counters, as items of the checkpoint table (which exports never read): one per
/// period, taken from with a conditional `UpdateItem`, so concurrent takers never pass a limit.
impl Counters for DynamoCheckpointStore {
    fn take(
        &self,
        key: &str,
        max: Option<u64>,
        with_cap: bool,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let (client, table) = self.parts();
            let mut conditions = Vec::new();
            let mut req = client
                .update_item()
                .table_name(table)
                .key("id", s(&key))
                .update_expression("ADD used :one")
                .expression_attribute_values(":one", AttributeValue::N("1".into()));
            if let Some(max) = max {
                conditions.push("(attribute_not_exists(used) OR used < :max)");
                req = req.expression_attribute_values(":max", AttributeValue::N(max.to_string()));
            }
            if with_cap {
                // No cap known yet (a new month, before the lister read the add-on's usage):
                // nothing is paid until it is. A cap of 0 lets nothing through.
                conditions.push(
                    "attribute_exists(addonCap) AND (used < addonCap OR (attribute_not_exists(used) AND addonCap > :zero))",
                );
                req = req.expression_attribute_values(":zero", AttributeValue::N("0".into()));
            }
            if !conditions.is_empty() {
                req = req.condition_expression(conditions.join(" AND "));
            }
            match req.send().await {
                Ok(_) => Ok(true),
                Err(e) if conditional_failed(&e) => Ok(false),
                Err(e) => Err(StoreError::from_sdk("UpdateItem", table, e)),
            }
        })
    }

    fn give_back(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let (client, table) = self.parts();
            client
                .update_item()
                .table_name(table)
                .key("id", s(&key))
                .update_expression("ADD used :minus")
                .condition_expression("used > :zero")
                .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .send()
                .await
                .map(|_| ())
                .or_else(|e| {
                    if conditional_failed(&e) {
                        Ok(())
                    } else {
                        Err(StoreError::from_sdk("UpdateItem", table, e))
                    }
                })
        })
    }

    fn read(&self, key: &str) -> BoxFuture<'_, Result<Counter, StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let (client, table) = self.parts();
            let out = client
                .get_item()
                .table_name(table)
                .key("id", s(&key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| StoreError::from_sdk("GetItem", table, e))?;
            let item = out.item.unwrap_or_default();
            Ok(Counter {
                used: attr_u64(&item, "used").unwrap_or(0),
                addon_cap: attr_u64(&item, "addonCap"),
            })
        })
    }

    fn set_cap(&self, key: &str, cap: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let (client, table) = self.parts();
            client
                .update_item()
                .table_name(table)
                .key("id", s(&key))
                .update_expression("SET addonCap = :cap")
                .expression_attribute_values(":cap", AttributeValue::N(cap.to_string()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| StoreError::from_sdk("UpdateItem", table, e))
        })
    }
}
