//! Triton's binary tensor data extension: a JSON header of
//! `Inference-Header-Content-Length` bytes, then each binary tensor's raw bytes in input
//! order, each sized by its `binary_data_size` parameter. FP32 values are little-endian;
//! BYTES elements are a 4-byte little-endian length followed by that many bytes.

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;

use super::error::ServeError;

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

/// Little-endian FP32 values of the tensor `name`.
pub fn fp32_from_le(bytes: &[u8], name: &str) -> Result<Vec<f32>, ServeError> {
    if bytes.len() % 4 != 0 {
        return Err(ServeError::bad_request(format!(
            "input {name:?}: {} bytes of FP32 binary data is not a multiple of 4",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Appends FP32 values, little-endian.
pub fn fp32_to_le(values: &[f32], out: &mut Vec<u8>) {
    out.reserve(values.len() * 4);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// The elements of a BYTES tensor `name` (length-prefixed).
pub fn bytes_elements(bytes: &Bytes, name: &str) -> Result<Vec<Bytes>, ServeError> {
    let mut elements = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(prefix) = bytes.get(at..at + 4) else {
            return Err(ServeError::bad_request(format!(
                "input {name:?}: BYTES element {} has a truncated 4-byte length",
                elements.len()
            )));
        };
        let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        let Some(end) = start.checked_add(length).filter(|&end| end <= bytes.len()) else {
            return Err(ServeError::bad_request(format!(
                "input {name:?}: BYTES element {} claims {length} bytes but only {} remain",
                elements.len(),
                bytes.len() - start
            )));
        };
        elements.push(bytes.slice(start..end));
        at = end;
    }
    Ok(elements)
}

/// Appends BYTES elements, each length-prefixed.
pub fn bytes_to_binary<S: AsRef<[u8]>>(elements: &[S], out: &mut Vec<u8>) {
    for element in elements {
        let element = element.as_ref();
        out.extend_from_slice(&(element.len() as u32).to_le_bytes());
        out.extend_from_slice(element);
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

    #[test]
    fn fp32_round_trips() {
        let mut out = Vec::new();
        fp32_to_le(&[1.5, -2.0], &mut out);
        assert_eq!(fp32_from_le(&out, "x").unwrap(), vec![1.5, -2.0]);
        assert!(fp32_from_le(&out[..7], "x").is_err());
    }

    #[test]
    fn bytes_elements_round_trip_and_reject_truncation() {
        let mut out = Vec::new();
        bytes_to_binary(&["ab", "", "xyz"], &mut out);
        let elements = bytes_elements(&Bytes::from(out.clone()), "x").unwrap();
        let elements: Vec<&[u8]> = elements.iter().map(|e| &e[..]).collect();
        assert_eq!(elements, vec![&b"ab"[..], b"", b"xyz"]);
        let truncated = Bytes::from(out[..out.len() - 1].to_vec());
        assert!(bytes_elements(&truncated, "x").is_err());
        assert!(bytes_elements(&Bytes::from_static(&[1, 0]), "x").is_err());
        let huge = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(bytes_elements(&huge, "x").is_err());
    }
}
