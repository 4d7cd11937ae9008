//! Triton's binary tensor data extension over HTTP: a JSON header of
//! `Inference-Header-Content-Length` bytes, then each binary tensor's raw bytes in input
//! order, each sized by its `binary_data_size` parameter (the tensors' byte form is
//! `crate::serve::binary`'s, shared with gRPC's raw contents).

use actix_web::http::header::HeaderValue;
use bytes::Bytes;

use crate::serve::error::ServeError;

/// Header naming the length of the JSON part of a binary request or response.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// Reads `Inference-Header-Content-Length`; `None` when the header is absent.
pub fn header_length(value: Option<&HeaderValue>) -> Result<Option<usize>, ServeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ServeError::bad_request(format!(
                "{HEADER_LENGTH} must be a non-negative integer, got {value:?}"
            ))
        })
}

/// Splits a request body into its JSON header and its binary part.
pub fn split_body(body: Bytes, header_length: Option<usize>) -> Result<(Bytes, Bytes), ServeError> {
    match header_length {
        None => Ok((body, Bytes::new())),
        Some(length) if length > body.len() => Err(ServeError::bad_request(format!(
            "{HEADER_LENGTH} is {length} but the body has only {} bytes",
            body.len()
        ))),
        Some(0) => Err(ServeError::bad_request(format!(
            "{HEADER_LENGTH} must be positive"
        ))),
        Some(length) => {
            let mut json = body;
            let binary = json.split_off(length);
            Ok((json, binary))
        }
    }
}

/// Hands out the binary part's tensors in order.
#[derive(Debug)]
pub struct BinaryCursor {
    rest: Bytes,
}

impl BinaryCursor {
    /// A cursor at the start of the binary part.
    pub fn new(binary: Bytes) -> Self {
        Self { rest: binary }
    }

    /// The next `size` bytes, for the tensor `name`.
    pub fn take(&mut self, size: usize, name: &str) -> Result<Bytes, ServeError> {
        if size > self.rest.len() {
            return Err(ServeError::bad_request(format!(
                "input {name:?}: binary_data_size {size} exceeds the {} binary bytes left in the body",
                self.rest.len()
            )));
        }
        Ok(self.rest.split_to(size))
    }

    /// Errors if bytes are left that no input claimed.
    pub fn finish(self) -> Result<(), ServeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ServeError::bad_request(format!(
                "{} bytes of binary data are not claimed by any input's binary_data_size",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_is_parsed_strictly() {
        assert_eq!(header_length(None).unwrap(), None);
        let value = HeaderValue::from_static("42");
        assert_eq!(header_length(Some(&value)).unwrap(), Some(42));
        for bad in ["-1", "abc", "1.5", ""] {
            let value = HeaderValue::from_static(bad);
            let error = header_length(Some(&value)).unwrap_err();
            assert!(error.to_string().contains(HEADER_LENGTH), "{error}");
        }
    }

    #[test]
    fn split_checks_the_header_length() {
        let body = Bytes::from_static(b"{}abcd");
        let (json, binary) = split_body(body.clone(), Some(2)).unwrap();
        assert_eq!((&json[..], &binary[..]), (&b"{}"[..], &b"abcd"[..]));
        let (json, binary) = split_body(body.clone(), None).unwrap();
        assert_eq!((json.len(), binary.len()), (6, 0));
        assert!(split_body(body.clone(), Some(7)).is_err());
        assert!(split_body(body, Some(0)).is_err());
    }

    #[test]
    fn cursor_hands_out_in_order_and_checks_leftovers() {
        let mut cursor = BinaryCursor::new(Bytes::from_static(b"abcdef"));
        assert_eq!(&cursor.take(2, "a").unwrap()[..], b"ab");
        assert!(cursor.take(5, "b").is_err());
        assert_eq!(&cursor.take(3, "b").unwrap()[..], b"cde");
        assert!(cursor.finish().unwrap_err().to_string().contains("1 bytes"));
    }
}
