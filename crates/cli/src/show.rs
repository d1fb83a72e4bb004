//! `hookline events show` and `hookline objects show`.

use hookline_core::ports::{PortError, Store};

/// The events-table item as JSON (attribute names as stored).
pub async fn event(store: &dyn Store, id: &str) -> Result<Option<serde_json::Value>, PortError> {
    Ok(store
        .event(id)
        .await?
        .and_then(|r| serde_json::to_value(r).ok()))
}

/// The objects- or provider-table item as JSON.
pub async fn object(store: &dyn Store, id: &str) -> Result<Option<serde_json::Value>, PortError> {
    Ok(store
        .item(id)
        .await?
        .map(|i| serde_json::Value::Object(i.0)))
}

/// `key: value` lines for a terminal.
pub fn human(value: &serde_json::Value) -> String {
    let mut out = String::new();
    if let serde_json::Value::Object(map) = value {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<width$}  {shown}\n"));
        }
    }
    out
}
