//! The request body template of a task (`config.payload`): placeholders in
//! its strings are filled in two steps, `{{user_id}}` when the job is made
//! (the result is `Job.payload`) and `{{param.NAME}}` when the call is
//! made, from the parameters read with the claim (so a change of the
//! user's parameters reaches jobs already queued).
//!
//! Only string values are filled, after parsing, so a value holding quotes
//! or backslashes can never break the JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use super::UserId;

/// The placeholder of the user id.
pub const USER_ID: &str = "{{user_id}}";
/// The start of a parameter's placeholder, `{{param.NAME}}`.
const PARAM_OPEN: &str = "{{param.";
/// The end of a placeholder.
const CLOSE: &str = "}}";

/// `template` with `{{user_id}}` replaced in every string, as JSON bytes.
pub fn render_payload(template: &Value, user: &UserId) -> Vec<u8> {
    let mut value = template.clone();
    map_strings(&mut value, &mut |text| text.replace(USER_ID, user.as_str()));
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `payload` with every `{{param.NAME}}` in its strings replaced by the
/// parameter (empty when the user has not set it). A payload that is not
/// JSON is returned unchanged.
pub fn fill_parameters(payload: &[u8], parameters: &BTreeMap<String, String>) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(payload) else {
        return payload.to_vec();
    };
    let mut changed = false;
    map_strings(&mut value, &mut |text| {
        if !text.contains(PARAM_OPEN) {
            return text.to_owned();
        }
        changed = true;
        fill_text(text, parameters)
    });
    if !changed {
        return payload.to_vec();
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| payload.to_vec())
}

fn fill_text(text: &str, parameters: &BTreeMap<String, String>) -> String {
    let mut filled = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(PARAM_OPEN) {
        filled.push_str(&rest[..start]);
        let after = &rest[start + PARAM_OPEN.len()..];
        match after.find(CLOSE) {
            Some(end) => {
                let name = &after[..end];
                filled.push_str(parameters.get(name).map_or("", String::as_str));
                rest = &after[end + CLOSE.len()..];
            }
            None => {
                filled.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    filled.push_str(rest);
    filled
}

fn map_strings(value: &mut Value, f: &mut dyn FnMut(&str) -> String) {
    match value {
        Value::String(text) => *text = f(text),
        Value::Array(items) => items.iter_mut().for_each(|item| map_strings(item, f)),
        Value::Object(fields) => fields.values_mut().for_each(|item| map_strings(item, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(template: Value, parameters: &[(&str, &str)], expected: Value) {
        let user = UserId::parse("user_12345").unwrap();
        let parameters = parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let payload = render_payload(&template, &user);
        let body = fill_parameters(&payload, &parameters);
        let got: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, expected, "template {template}");
    }

    #[test]
    fn placeholders_fill_strings_only() {
        check(
            json!({"user_id": "{{user_id}}"}),
            &[],
            json!({"user_id": "user_12345"}),
        );
        check(
            json!({"who": "u={{user_id}}", "lang": "{{param.lang}}", "n": 3, "list": ["{{param.lang}}-{{param.region}}"]}),
            &[("lang", "de"), ("region", "AT")],
            json!({"who": "u=user_12345", "lang": "de", "n": 3, "list": ["de-AT"]}),
        );
        // An unset parameter is empty; quotes in a value stay inside the string.
        check(
            json!({"a": "{{param.missing}}", "b": "{{param.q}}"}),
            &[("q", "say \"hi\"\\")],
            json!({"a": "", "b": "say \"hi\"\\"}),
        );
        // An unclosed placeholder is left as written.
        check(
            json!({"a": "{{param.open"}),
            &[],
            json!({"a": "{{param.open"}),
        );
    }

    #[test]
    fn a_payload_that_is_not_json_is_sent_as_is() {
        let bytes = b"\x00not json {{param.x}}".to_vec();
        assert_eq!(fill_parameters(&bytes, &BTreeMap::new()), bytes);
    }
}
