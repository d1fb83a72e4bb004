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
            if let (true, serde_json::Value::Object(destinations)) = (k == "destinations", v) {
                for (name, state) in destinations {
                    out.push_str(&format!(
                        "{:<width$}  {}\n",
                        format!("destination {name}"),
                        destination_line(state)
                    ));
                }
                continue;
            }
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<width$}  {shown}\n"));
        }
    }
    out
}

/// `events show`.
pub async fn event_cmd(
    backend: &crate::opts::BackendOpts,
    event_id: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let b = backend.open().await?;
    let Some(item) = event(b.store.as_ref(), event_id).await? else {
        anyhow::bail!(
            "no event {event_id} in {}",
            backend.tables.events_table_name
        );
    };
    print(&item, json)
}

/// `objects show`.
pub async fn object_cmd(
    backend: &crate::opts::BackendOpts,
    id: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use hookline_core::records::ItemTable;
    let b = backend.open().await?;
    let Some(item) = object(b.store.as_ref(), id).await? else {
        let table = match ItemTable::for_id(id) {
            ItemTable::Provider => &backend.tables.provider_table_name,
            ItemTable::Objects => &backend.tables.objects_table_name,
        };
        anyhow::bail!("no item {id} in {table}");
    };
    print(&item, json)
}

fn print(item: &serde_json::Value, json: bool) -> anyhow::Result<std::process::ExitCode> {
    if json {
        crate::output::print_json(item)?;
    } else {
        print!("{}", human(item));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One destination's state in words: `delivered after 3 attempts`, or
/// `not delivered, 5 attempts, failing since 2026-12-02T10:00:00Z: HTTP 503: …`.
pub(crate) fn destination_line(state: &serde_json::Value) -> String {
    let attempts = state["attempts"].as_u64().unwrap_or(0);
    if state["delivered"] == true {
        return format!("delivered after {attempts} attempt(s)");
    }
    let mut line = format!("not delivered, {attempts} attempt(s)");
    if let Some(since) = state["firstFailedAt"].as_i64() {
        line.push_str(&format!(
            ", failing since {}",
            hookline_core::clock::rfc3339(since)
        ));
    }
    if let Some(error) = state["lastError"].as_str() {
        line.push_str(&format!(": {error}"));
    }
    line
}
