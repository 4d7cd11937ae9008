//! What `mica serve` prints on stdout once it is ready: the URLs it serves (inference,
//! health, metrics, admin when on, gRPC when on) and one `curl` line that runs an
//! inference on the served model, so a new user can try it by pasting one line.
//!
//! The curl line sends one zero-filled image as binary tensor data (the KServe binary
//! extension: a JSON header of `Inference-Header-Content-Length` bytes, then the raw
//! little-endian FP32 values) and asks for the top-1 class, so its answer is one short
//! JSON line naming the class and the unit that ran it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::serve::ModelSettings;

/// What the server listens on and serves, once ready.
#[derive(Debug, Clone)]
pub struct Banner {
    /// The model as clients see it (name, input name and shape, output name).
    pub model: ModelSettings,
    /// The KServe v2 HTTP listener (bound address).
    pub http: SocketAddr,
    /// The gRPC listener, when one is on.
    pub grpc: Option<SocketAddr>,
    /// The metrics/admin listener, when one is on.
    pub metrics: Option<SocketAddr>,
    /// Whether that listener serves Prometheus `/metrics`.
    pub prometheus: bool,
    /// Whether it serves the admin routes.
    pub admin: bool,
    /// What runs the model: "5 units (cpu, amp, ...), policy contention_aware", or the
    /// pipeline's stages.
    pub what: String,
    /// Whether every figure it answers with comes from simulated units.
    pub simulated: bool,
}

/// Where a client on this machine reaches a listener bound to `addr`: the loopback
/// address when bound to every interface.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

impl Banner {
    /// The inference URL of the served model.
    pub fn infer_url(&self) -> String {
        format!(
            "http://{}/v2/models/{}/infer",
            reachable(self.http),
            self.model.name
        )
    }

    /// One shell line that sends a zero-filled image to the model with curl and prints
    /// the top-1 class as JSON.
    pub fn curl_line(&self) -> String {
        let mut shape = vec![1];
        shape.extend_from_slice(&self.model.input_shape);
        let bytes = self.model.input_len() * std::mem::size_of::<f32>();
        let header = serde_json::json!({
            "inputs": [{
                "name": self.model.input_name,
                "shape": shape,
                "datatype": "FP32",
                "parameters": { "binary_data_size": bytes },
            }],
            "outputs": [{
                "name": self.model.output_name,
                "parameters": { "classification": 1 },
            }],
        })
        .to_string();
        // Names are validated without spaces or '/'; a quote would still break the
        // shell's single quotes, so escape it the POSIX way.
        let quoted = header.replace('\'', r"'\''");
        format!(
            "(printf '%s' '{quoted}'; head -c {bytes} /dev/zero) | curl -s --data-binary @- \
             -H 'Content-Type: application/octet-stream' \
             -H 'Inference-Header-Content-Length: {}' {}",
            header.len(),
            self.infer_url()
        )
    }

    /// The banner's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = if self.simulated {
            " [SIMULATED units: answers are emulated, not measured]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "mica is ready: model {} on {}{label}",
            self.model.name, self.what
        );
        let http = reachable(self.http);
        let row = |out: &mut String, what: &str, url: &str| {
            let _ = writeln!(out, "  {what:<28} {url}");
        };
        row(&mut out, "inference (KServe v2 HTTP)", &self.infer_url());
        row(
            &mut out,
            "model metadata",
            &format!("http://{http}/v2/models/{}", self.model.name),
        );
        row(
            &mut out,
            "health",
            &format!("http://{http}/v2/health/ready"),
        );
        if let Some(grpc) = self.grpc {
            row(
                &mut out,
                "inference (KServe v2 gRPC)",
                &format!("grpc://{}", reachable(grpc)),
            );
        }
        match (self.metrics.map(reachable), self.prometheus) {
            (Some(metrics), true) => row(
                &mut out,
                "metrics (Prometheus)",
                &format!("http://{metrics}/metrics"),
            ),
            _ => row(&mut out, "metrics", "off ([metrics] enabled = false)"),
        }
        match (self.metrics.map(reachable), self.admin) {
            (Some(metrics), true) => row(
                &mut out,
                "admin (bearer token)",
                &format!("http://{metrics}{}", crate::admin::POLICY_PATH),
            ),
            _ => row(&mut out, "admin", "off (no [admin] token)"),
        }
        let _ = writeln!(out, "try it (one zero-filled image, top-1 class):");
        let _ = writeln!(out, "  {}", self.curl_line());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banner() -> Banner {
        Banner {
            model: ModelSettings::default(),
            http: "0.0.0.0:8000".parse().unwrap(),
            grpc: None,
            metrics: Some("127.0.0.1:8002".parse().unwrap()),
            prometheus: true,
            admin: false,
            what: "2 units (cpu, amp), policy contention_aware".into(),
            simulated: true,
        }
    }

    #[test]
    fn the_curl_line_declares_the_exact_header_and_body_sizes() {
        let line = banner().curl_line();
        let header = line
            .split('\'')
            .nth(3)
            .expect("the header is the second quoted string");
        let value: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(value["inputs"][0]["name"], "input");
        assert_eq!(
            value["inputs"][0]["shape"],
            serde_json::json!([1, 3, 224, 224])
        );
        let bytes = 3 * 224 * 224 * 4;
        assert_eq!(value["inputs"][0]["parameters"]["binary_data_size"], bytes);
        assert!(
            line.contains(&format!("head -c {bytes} /dev/zero")),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "Inference-Header-Content-Length: {}'",
                header.len()
            )),
            "{line}"
        );
        // Bound to every interface: the line goes to the loopback address.
        assert!(
            line.ends_with(" http://127.0.0.1:8000/v2/models/resnet50/infer"),
            "{line}"
        );
    }

    #[test]
    fn the_banner_lists_what_is_on_and_says_what_is_off() {
        let text = banner().render();
        assert!(text.contains("SIMULATED"), "{text}");
        assert!(text.contains("http://127.0.0.1:8002/metrics"), "{text}");
        assert!(text.contains("admin"), "{text}");
        assert!(text.contains("off (no [admin] token)"), "{text}");
        assert!(!text.contains("grpc://"), "{text}");
        let on = Banner {
            admin: true,
            grpc: Some("127.0.0.1:8001".parse().unwrap()),
            ..banner()
        };
        let text = on.render();
        assert!(
            text.contains("http://127.0.0.1:8002/v2/admin/policy"),
            "{text}"
        );
        assert!(text.contains("grpc://127.0.0.1:8001"), "{text}");
        let off = Banner {
            metrics: None,
            prometheus: false,
            ..banner()
        };
        assert!(off.render().contains("off ([metrics] enabled = false)"));
    }
}
