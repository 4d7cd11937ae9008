//! The backend's answer as an inference response: FP32 values or the classification
//! extension's top-k `"score:index:label"` strings, as JSON or as binary data after the
//! JSON header (`Inference-Header-Content-Length`).

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::HttpResponse;

use super::backend::InferResponse;
use super::binary::{bytes_to_binary, fp32_to_le, HEADER_LENGTH};
use super::error::ServeError;
use super::model::{Labels, ServedModel};
use super::protocol::{
    BinaryDataSize, InferResponseHeader, OutputData, ResponseOutput, ResponseParameters,
};
use super::request::OutputPlan;

/// Builds the HTTP response for a request of `images` images.
pub fn encode(
    model: &ServedModel,
    plan: OutputPlan,
    id: Option<String>,
    images: u32,
    answer: &InferResponse,
) -> Result<HttpResponse, ServeError> {
    let per_image = model.settings.output_len();
    if answer.images != images
        || answer.per_image != per_image
        || answer.data.len() != images as usize * per_image
    {
        return Err(ServeError::Internal(format!(
            "the backend answered {} images × {} values ({} in all) to a request of {images} images × {per_image}",
            answer.images,
            answer.per_image,
            answer.data.len()
        )));
    }
    let classes = plan.classification.map(|k| {
        top_k(
            &answer.data,
            per_image,
            k.min(per_image),
            model.labels.as_ref(),
        )
    });
    let mut shape = Vec::with_capacity(model.settings.output_shape.len() + 1);
    shape.push(images as usize);
    let (datatype, values) = match &classes {
        Some(strings) => {
            shape.push(strings.len() / images.max(1) as usize);
            ("BYTES", OutputData::Bytes(strings))
        }
        None => {
            shape.extend_from_slice(&model.settings.output_shape);
            ("FP32", OutputData::Fp32(&answer.data))
        }
    };
    let mut binary = Vec::new();
    let (parameters, data) = if plan.binary {
        match values {
            OutputData::Fp32(v) => fp32_to_le(v, &mut binary),
            OutputData::Bytes(v) => bytes_to_binary(v, &mut binary),
        }
        let size = BinaryDataSize {
            binary_data_size: binary.len(),
        };
        (Some(size), None)
    } else {
        (None, Some(values))
    };
    let header = InferResponseHeader {
        model_name: &model.settings.name,
        model_version: &model.settings.version,
        id,
        parameters: ResponseParameters {
            mica_unit: answer.unit.as_str(),
            mica_engine: answer.engine,
            mica_queue_wait_us: answer.queue_wait.as_micros() as u64,
            mica_batch_images: answer.batch_images,
        },
        outputs: vec![ResponseOutput {
            name: &model.settings.output_name,
            datatype,
            shape,
            parameters,
            data,
        }],
    };
    let mut body = serde_json::to_vec(&header)
        .map_err(|error| ServeError::Internal(format!("cannot encode the response: {error}")))?;
    if !plan.binary {
        return Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
            .body(body));
    }
    let json_length = body.len();
    body.extend_from_slice(&binary);
    Ok(HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ))
        .insert_header((HEADER_LENGTH, json_length))
        .body(body))
}

/// The `k` largest values of each image, best first, as Triton formats them:
/// `"{value:.6}:{index}"` with `":{label}"` appended when a label is known.
pub fn top_k(data: &[f32], per_image: usize, k: usize, labels: Option<&Labels>) -> Vec<String> {
    let mut out = Vec::with_capacity(k * data.len() / per_image.max(1));
    let mut order: Vec<usize> = Vec::with_capacity(per_image);
    for image in data.chunks_exact(per_image.max(1)) {
        order.clear();
        order.extend(0..image.len());
        let by_value_desc = |a: &usize, b: &usize| image[*b].total_cmp(&image[*a]).then(a.cmp(b));
        if k < order.len() {
            order.select_nth_unstable_by(k, by_value_desc);
            order.truncate(k);
        }
        order.sort_unstable_by(by_value_desc);
        for &index in order.iter().take(k) {
            let label = labels
                .and_then(|l| l.names.get(index))
                .filter(|l| !l.is_empty());
            out.push(match label {
                Some(label) => format!("{:.6}:{index}:{label}", image[index]),
                None => format!("{:.6}:{index}", image[index]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::MessageBody;
    use mica_policies::UnitId;

    use super::*;

    fn labels() -> Labels {
        Labels {
            file_name: "labels.txt".into(),
            names: vec!["cat".into(), "dog".into(), "".into()],
        }
    }

    #[test]
    fn top_k_orders_and_labels() {
        let data = [0.1, 0.7, 0.2, 0.0, 0.5, 0.9];
        let strings = top_k(&data, 3, 2, Some(&labels()));
        assert_eq!(
            strings,
            vec![
                "0.700000:1:dog",
                "0.200000:2",
                "0.900000:2",
                "0.500000:1:dog"
            ]
        );
        assert_eq!(top_k(&data, 3, 3, None).len(), 6);
        let ties = top_k(&[1.0, 1.0, 1.0], 3, 2, None);
        assert_eq!(ties, vec!["1.000000:0", "1.000000:1"]);
    }

    fn answer(images: u32, per_image: usize) -> InferResponse {
        InferResponse {
            images,
            batch_images: images,
            per_image,
            data: (0..images as usize * per_image).map(|i| i as f32).collect(),
            unit: UnitId::new("cpu"),
            unit_index: 0,
            engine: "sim",
            queue_wait: Duration::ZERO,
            latency: Duration::ZERO,
        }
    }

    fn model() -> ServedModel {
        ServedModel {
            settings: crate::serve::ModelSettings {
                output_shape: vec![4],
                ..Default::default()
            },
            max_batch: 8,
            priority_levels: 1,
            default_priority: 0,
            labels: None,
            preprocessor: None,
        }
    }

    #[test]
    fn binary_output_follows_the_json_header() {
        let plan = OutputPlan {
            binary: true,
            classification: None,
        };
        let response = encode(&model(), plan, Some("7".into()), 2, &answer(2, 4)).unwrap();
        let length: usize = response
            .headers()
            .get(HEADER_LENGTH)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = response.into_body().try_into_bytes().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&body[..length]).unwrap();
        assert_eq!(header["id"], "7");
        assert_eq!(header["outputs"][0]["shape"], serde_json::json!([2, 4]));
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 32);
        assert_eq!(body.len() - length, 32);
        assert_eq!(&body[length + 4..length + 8], &1.0f32.to_le_bytes());
    }

    #[test]
    fn classification_is_bytes_of_shape_batch_by_k() {
        let plan = OutputPlan {
            binary: false,
            classification: Some(2),
        };
        let response = encode(&model(), plan, None, 2, &answer(2, 4)).unwrap();
        let body = response.into_body().try_into_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let output = &json["outputs"][0];
        assert_eq!(output["datatype"], "BYTES");
        assert_eq!(output["shape"], serde_json::json!([2, 2]));
        assert_eq!(output["data"][0], "3.000000:3");
        assert_eq!(output["data"][2], "7.000000:3");
    }

    #[test]
    fn a_wrong_sized_answer_is_an_internal_error() {
        let plan = OutputPlan {
            binary: false,
            classification: None,
        };
        let error = encode(&model(), plan, None, 2, &answer(1, 4)).unwrap_err();
        assert_eq!(error.status(), 500);
    }
}
