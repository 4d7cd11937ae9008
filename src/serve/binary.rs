//! Tensors in their binary wire form, as Triton's binary tensor data extension (HTTP)
//! and gRPC's `raw_input_contents` / `raw_output_contents` both carry them: FP32 values
//! little-endian, BYTES elements each a 4-byte little-endian length followed by that
//! many bytes.

use bytes::Bytes;

use super::error::ServeError;

/// Little-endian FP32 values of the tensor `name`.
pub fn fp32_from_le(bytes: &[u8], name: &str) -> Result<Vec<f32>, ServeError> {
    if !bytes.len().is_multiple_of(4) {
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
