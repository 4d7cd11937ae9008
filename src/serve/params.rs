//! Request, input and output `parameters`, whatever the transport: JSON values over
//! HTTP, `InferParameter` over gRPC. Errors quote a value as JSON writes it, so both
//! transports say the same thing about the same bad value.

use std::collections::BTreeMap;
use std::fmt;

use super::error::ServeError;

/// A `parameters` map.
pub type Parameters = BTreeMap<String, Param>;

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A boolean.
    Bool(bool),
    /// A signed integer (negative, or gRPC `int64_param`).
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    String(String),
    /// Anything else (a JSON array or object), as its JSON text.
    Other(String),
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Bool(b) => write!(f, "{b}"),
            Param::Int(i) => write!(f, "{i}"),
            Param::UInt(u) => write!(f, "{u}"),
            Param::Double(d) => match serde_json::Number::from_f64(*d) {
                Some(number) => write!(f, "{number}"),
                None => write!(f, "{d}"),
            },
            Param::String(s) => match serde_json::to_string(s) {
                Ok(quoted) => f.write_str(&quoted),
                Err(_) => write!(f, "{s:?}"),
            },
            Param::Other(text) => f.write_str(text),
        }
    }
}

impl Param {
    /// A JSON value as a parameter; `None` for `null` (taken as absent).
    pub fn from_json(value: serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        Some(match value {
            Value::Null => return None,
            Value::Bool(b) => Param::Bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Param::UInt(u),
                (None, Some(i), _) => Param::Int(i),
                (None, None, Some(d)) => Param::Double(d),
                (None, None, None) => Param::Other(n.to_string()),
            },
            Value::String(s) => Param::String(s),
            other => Param::Other(other.to_string()),
        })
    }
}

/// Reads an unsigned integer parameter; `what` names it in errors
/// (`parameters.priority`).
pub fn param_u64(params: &Parameters, key: &str, what: &str) -> Result<Option<u64>, ServeError> {
    match params.get(key) {
        None => Ok(None),
        Some(Param::UInt(u)) => Ok(Some(*u)),
        Some(Param::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(value) => Err(ServeError::bad_request(format!(
            "{what} must be a non-negative integer, got {value}"
        ))),
    }
}

/// Reads a boolean parameter; `what` names it in errors.
pub fn param_bool(params: &Parameters, key: &str, what: &str) -> Result<Option<bool>, ServeError> {
    match params.get(key) {
        None => Ok(None),
        Some(Param::Bool(b)) => Ok(Some(*b)),
        Some(value) => Err(ServeError::bad_request(format!(
            "{what} must be a boolean, got {value}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Param)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn integers_of_either_sign_kind_read_alike() {
        let p = params(&[("a", Param::UInt(3)), ("b", Param::Int(4))]);
        assert_eq!(param_u64(&p, "a", "a").unwrap(), Some(3));
        assert_eq!(param_u64(&p, "b", "b").unwrap(), Some(4));
        assert_eq!(param_u64(&p, "c", "c").unwrap(), None);
    }

    #[test]
    fn errors_quote_values_as_json_does() {
        for (json, text) in [
            (serde_json::json!(-1), "-1"),
            (serde_json::json!(1.5), "1.5"),
            (serde_json::json!("x\"y"), r#""x\"y""#),
            (serde_json::json!([1]), "[1]"),
            (serde_json::json!(true), "true"),
        ] {
            let param = Param::from_json(json.clone()).unwrap();
            assert_eq!(param.to_string(), json.to_string());
            let p = params(&[("priority", param)]);
            let error = param_u64(&p, "priority", "parameters.priority").unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("parameters.priority must be a non-negative integer, got {text}")
            );
        }
        assert_eq!(Param::from_json(serde_json::Value::Null), None);
        let p = params(&[("b", Param::UInt(1))]);
        assert!(param_bool(&p, "b", "b").is_err());
    }
}
