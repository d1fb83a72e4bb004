//! JSON item <-> DynamoDB attribute values, so records keep one shape.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Number, Value};

pub(crate) fn to_attr(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(to_attr).collect()),
        Value::Object(o) => AttributeValue::M(to_item(o)),
    }
}

pub(crate) fn to_item(map: &Map<String, Value>) -> HashMap<String, AttributeValue> {
    map.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect()
}

pub(crate) fn from_attr(a: &AttributeValue) -> Value {
    match a {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => n
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| {
                n.parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
            })
            .unwrap_or_else(|| Value::String(n.clone())),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(l) => Value::Array(l.iter().map(from_attr).collect()),
        AttributeValue::M(m) => Value::Object(from_item(m)),
        AttributeValue::Ss(ss) => Value::Array(ss.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(ns) => Value::Array(ns.iter().cloned().map(Value::String).collect()),
        _ => Value::Null,
    }
}

pub(crate) fn from_item(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    let mut sorted: Vec<_> = item.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .into_iter()
        .map(|(k, v)| (k.clone(), from_attr(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_record() {
        let v = serde_json::json!({
            "objectId": "po_1", "amount": 3780, "chargesEnabled": true,
            "requirementsCurrentlyDue": ["a", "b"], "nested": {"x": 1}
        });
        let Value::Object(map) = v.clone() else {
            panic!()
        };
        let item = to_item(&map);
        assert_eq!(item["amount"], AttributeValue::N("3780".into()));
        assert_eq!(Value::Object(from_item(&item)), v);
    }
}
