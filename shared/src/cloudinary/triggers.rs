//! Notification triggers (Admin API `triggers`): which URL Cloudinary notifies of which event
//! type. Requested as Cloudinary's Python SDK requests them (`cloudinary.api.triggers`,
//! `create_trigger`, `delete_trigger`): `GET triggers` (an `event_type` query to list one
//! type), `POST triggers` with a JSON body `{"uri", "event_type"}`, `DELETE triggers/{id}`
//! with an empty JSON body; Basic auth, counted in the Admin API's hourly quota.

use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};

use super::{Answer, CloudinaryClient, CloudinaryError, TAG_SAFE};

/// One trigger: Cloudinary notifies `uri` of every `event_type` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    pub uri: String,
    pub event_type: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The answer of `GET triggers`.
#[derive(Debug, Clone, Deserialize)]
struct TriggerList {
    #[serde(default)]
    triggers: Vec<Trigger>,
}

/// An id sent as a string (Cloudinary) or a number.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "a trigger id is a string, not {other}"
        ))),
    }
}

impl CloudinaryClient {
    /// Every trigger of the account (`GET triggers`), or those of one event type.
    pub async fn triggers(
        &self,
        event_type: Option<&str>,
    ) -> Result<Answer<Vec<Trigger>>, CloudinaryError> {
        let mut req = self.http.get(self.url("triggers"));
        if let Some(t) = event_type {
            req = req.query(&[("event_type", t)]);
        }
        let answer: Answer<TriggerList> = self
            .send(
                "the list of notification triggers".to_string(),
                self.admin(req),
            )
            .await?;
        Ok(Answer {
            value: answer.value.triggers,
            quota: answer.quota,
            latency: answer.latency,
        })
    }

    /// Creates a trigger (`POST triggers`): Cloudinary notifies `uri` of every `event_type`
    /// event (a webhook, signed with the account's API secret).
    pub async fn create_trigger(
        &self,
        uri: &str,
        event_type: &str,
    ) -> Result<Answer<Trigger>, CloudinaryError> {
        let body = serde_json::json!({ "uri": uri, "event_type": event_type });
        let req = self.admin(self.http.post(self.url("triggers")).json(&body));
        self.send(
            format!("a {event_type:?} notification trigger for {uri:?}"),
            req,
        )
        .await
    }

    /// Deletes trigger `id` (`DELETE triggers/{id}`).
    pub async fn delete_trigger(
        &self,
        id: &str,
    ) -> Result<Answer<serde_json::Value>, CloudinaryError> {
        if id.is_empty() || id == "." || id == ".." {
            return Err(CloudinaryError::Refused {
                reason: format!("trigger id {id:?} would change the API path"),
            });
        }
        let path = format!("triggers/{}", utf8_percent_encode(id, TAG_SAFE));
        let req = self.admin(
            self.http
                .delete(self.url(&path))
                .json(&serde_json::json!({})),
        );
        self.send(format!("deleting notification trigger {id:?}"), req)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_read_whatever_the_ids_type_and_missing_times() {
        let list: TriggerList = serde_json::from_str(
            r#"{"triggers":[
                {"id":"a1b2","uri":"https://x/","event_type":"upload","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"},
                {"id":7,"uri":"https://y/","event_type":"delete"}
            ],"total":2}"#,
        )
        .unwrap();
        assert_eq!(list.triggers.len(), 2);
        assert_eq!(list.triggers[0].id, "a1b2");
        assert_eq!(list.triggers[1].id, "7");
        assert_eq!(list.triggers[1].created_at, None);
        let empty: TriggerList = serde_json::from_str("{}").unwrap();
        assert!(empty.triggers.is_empty());
    }
}
