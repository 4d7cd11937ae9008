//! The onnx engine alone, no scheduler: one engine instance running synthetic batches
//! back to back, as `scripts/onnx_reference.py` runs ONNX Runtime's Python API. Splits
//! mica's overhead into the engine's and the service's.
//!
//!   cargo run --release -p mica-engines --example onnx_rate -- MODEL C,H,W OUT THREADS BATCH SECONDS

use std::time::{Duration, Instant};

use mica_core::contention::NoContention;
use mica_core::UnitKind;
use mica_engines::{
    build_engine, BatchInput, ContentionHub, EngineContext, EngineSettings, EngineSpec,
    OnnxEngineConfig, OnnxProvider,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, shape, output, threads, batch, seconds] = args.as_slice() else {
        return Err("usage: onnx_rate MODEL C,H,W OUTPUT_LEN THREADS BATCH SECONDS".into());
    };
    let shape: Vec<usize> = shape.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let batch: u32 = batch.parse()?;
    let mut settings = OnnxEngineConfig::new(model, OnnxProvider::Cpu);
    settings.intra_threads = Some(threads.parse()?);
    let spec = EngineSpec::new(
        EngineSettings::Onnx(settings),
        UnitKind::Cpu,
        batch,
        shape,
        output.parse()?,
    );
    let context = EngineContext {
        hub: std::sync::Arc::new(ContentionHub::new(Box::new(NoContention))),
        custom: None,
    };
    let mut engine = build_engine(&spec, &context)?;
    engine.warm_up()?;
    let length = Duration::from_secs_f64(seconds.parse()?);
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < length {
        let began = Instant::now();
        engine.infer(BatchInput {
            images: batch,
            data: None,
        })?;
        latencies.push(began.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{{\"batch\": {batch}, \"throughput_img_s\": {:.1}, \"p50_ms\": {:.3}}}",
        f64::from(batch) * latencies.len() as f64 / elapsed,
        latencies[latencies.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}
