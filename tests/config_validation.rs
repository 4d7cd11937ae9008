//! Config validation: every rejected case names the file and the key (once), `mica
//! check` refuses what `mica serve` would refuse at start (`[pipeline]` included), and
//! the shipped configs load and pass `mica check`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use mica::config::ResolvedConfig;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `text` as a config file in a temporary folder (never into `config/`), its
/// `profiles/...` and `../engines/...` paths pointed at the repository's, and loads it.
fn load(text: &str) -> Result<ResolvedConfig, String> {
    let root = repo();
    let text = text
        .replace(
            "\"profiles/",
            &format!("\"{}/config/profiles/", root.display()),
        )
        .replace("\"../engines/", &format!("\"{}/engines/", root.display()));
    let dir = tempfile::tempdir().unwrap();
    let mut file = tempfile::Builder::new()
        .prefix("test-")
        .suffix(".toml")
        .tempfile_in(dir.path())
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let result = ResolvedConfig::load(file.path()).map_err(|e| e.to_string());
    if let Err(message) = &result {
        let name = file
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(message.contains(&name), "error names the file: {message}");
    }
    result
}

const CUDA_UNIT: &str = r#"
[[units]]
id = "cuda"
kind = "cuda_fp32"
engine = { type = "sim" }
profile = "profiles/orin-agx/cuda_fp32.toml"
"#;

fn rejected(text: &str, key: &str, words: &str) {
    let message = load(text).expect_err("must be rejected");
    assert!(
        message.contains(key),
        "error names the key {key:?}: {message}"
    );
    assert!(
        message.to_lowercase().contains(&words.to_lowercase()),
        "error says {words:?}: {message}"
    );
}

#[test]
fn shipped_configs_load() {
    for name in ["orin-agx-sim.toml", "null.toml"] {
        let path = repo().join("config").join(name);
        ResolvedConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let orin = ResolvedConfig::load(&repo().join("config/orin-agx-sim.toml")).unwrap();
    let ids: Vec<&str> = orin.config.units.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["cpu", "cuda", "amp", "dla0", "dla1"]);
    assert!(orin.units.iter().all(|u| u.profile.is_some()));
    assert!(orin.pipeline.is_none());
}

/// `mica check` on `path`: its exit status and what it printed.
fn mica_check(path: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(["check", "--config"])
        .arg(path)
        .env_remove("MICA_CONFIG")
        .output()
        .expect("runs mica check");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Every shipped config loads and passes `mica check` (its `[pipeline]` resolved), or
/// fails both only for what a checkout may lack: the torch feature, or model files that
/// `scripts/export_model.py` writes into models/. `mica check` says what loading says.
#[test]
fn every_shipped_config_loads_and_passes_mica_check() {
    let mut checked = 0;
    let mut pipelines = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "toml") || name.starts_with("test-") {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let (passed, output) = mica_check(&path);
        match ResolvedConfig::load(&path) {
            Ok(loaded) => {
                assert!(passed, "{name}: mica check fails: {output}");
                assert!(output.contains(": ok ("), "{name}: {output}");
                let has_pipeline = text.lines().any(|l| l.trim() == "[pipeline]");
                assert_eq!(loaded.pipeline.is_some(), has_pipeline, "{name}");
                if has_pipeline {
                    pipelines += 1;
                    assert!(output.contains("pipeline"), "{name}: {output}");
                }
            }
            Err(error) => {
                let message = error.to_string();
                let lacks_model =
                    message.contains("/models/") && message.contains("does not exist");
                let lacks_torch = message.contains("not built into this binary");
                assert!(lacks_model || lacks_torch, "{name}: {message}");
                assert!(!passed, "{name}: mica check passes what loading refuses");
                assert!(output.contains(&message), "{name}: {output} vs {message}");
            }
        }
    }
    assert!(checked >= 13, "only {checked} shipped configs found");
    // The pipeline configs without torch units (the others need the feature).
    assert!(pipelines >= 3, "only {pipelines} pipeline configs resolved");
}

#[test]
fn a_missing_file_is_named() {
    let message = ResolvedConfig::load(Path::new("config/no-such-file.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no-such-file.toml") && message.contains("no such config file"),
        "{message}"
    );
}

#[test]
fn unknown_unit_kind() {
    rejected(
        &CUDA_UNIT.replace("cuda_fp32", "cuda_fp64"),
        "units",
        "cuda_fp64",
    );
}

#[test]
fn unknown_key_anywhere() {
    rejected(&format!("{CUDA_UNIT}streamz = 2\n"), "units", "streamz");
    rejected(
        &format!("[scheduler]\nqueue_capacty = 3\n{CUDA_UNIT}"),
        "scheduler",
        "queue_capacty",
    );
}

#[test]
fn zero_streams() {
    rejected(
        &format!("{CUDA_UNIT}streams = 0\n"),
        "units[0] (cuda).streams",
        "between 1 and 64",
    );
}

#[test]
fn stagger_needs_two_streams_and_a_reachable_size() {
    rejected(
        &format!("{CUDA_UNIT}stagger_min_images = 64\n"),
        "units[0] (cuda).stagger_min_images",
        "streams = 2",
    );
    rejected(
        &format!("{CUDA_UNIT}streams = 2\nmax_batch = 64\nstagger_min_images = 128\n"),
        "units[0] (cuda).stagger_min_images",
        "between the unit's streams (2) and its max_batch (64)",
    );
    let loaded = load(&format!(
        "{CUDA_UNIT}streams = 2\nmax_batch = 64\nstagger_min_images = 32\n"
    ))
    .expect("a stagger within the unit's batch loads");
    assert_eq!(loaded.config.units[0].stagger_min_images, 32);
}

#[test]
fn batch_size_above_the_limit() {
    rejected(
        &format!("{CUDA_UNIT}max_batch = 100000\n"),
        "units[0] (cuda).max_batch",
        "between 1 and",
    );
    rejected(
        &format!("{CUDA_UNIT}max_batch = 0\n"),
        "units[0] (cuda).max_batch",
        "between 1 and",
    );
}

#[test]
fn unknown_policy() {
    rejected(
        &format!("[scheduler]\npolicy = {{ type = \"fastest\" }}\n{CUDA_UNIT}"),
        "scheduler",
        "fastest",
    );
}

#[test]
fn duplicate_ids_and_bad_ids() {
    rejected(
        &format!("{CUDA_UNIT}{CUDA_UNIT}"),
        "units[1] (cuda).id",
        "two units",
    );
    rejected(
        &CUDA_UNIT.replace("\"cuda\"\nkind", "\"cu da\"\nkind"),
        "units[0].id",
        "letters",
    );
}

#[test]
fn sim_units_need_a_profile_that_exists_and_is_valid() {
    rejected(
        "[[units]]\nid = \"c\"\nkind = \"cpu\"\nengine = { type = \"sim\" }\n",
        "units[0] (c).profile",
        "needs a profile",
    );
    rejected(
        &CUDA_UNIT.replace("cuda_fp32.toml", "missing.toml"),
        "units[0] (cuda).profile",
        "missing.toml",
    );
}

#[test]
fn dla_units_need_a_valid_core_and_others_have_none() {
    let dla = "[[units]]\nid = \"d\"\nkind = \"dla\"\nengine = { type = \"sim\" }\nprofile = \"profiles/orin-agx/dla.toml\"\n";
    rejected(dla, "units[0] (d).core", "core = 0");
    rejected(&format!("{dla}core = 2\n"), "units[0] (d).core", "0 and 1");
    rejected(
        &format!("{CUDA_UNIT}core = 0\n"),
        "units[0] (cuda).core",
        "only dla",
    );
    load(&format!("{dla}core = 1\n")).unwrap();
}

#[test]
fn torch_units_need_a_model_or_the_feature() {
    let torch = "[[units]]\nid = \"t\"\nkind = \"cpu\"\nengine = { type = \"torch\" }\n";
    let message = load(torch).unwrap_err();
    assert!(message.contains("units[0] (t).engine."), "{message}");
    assert!(
        message.contains("engine.model") || message.contains("--features torch"),
        "{message}"
    );
}

#[test]
fn scheduler_values_out_of_range() {
    rejected(
        &format!("[scheduler]\nqueue_capacity = 0\n{CUDA_UNIT}"),
        "scheduler.queue_capacity",
        "at least 1",
    );
    rejected(
        &format!("[scheduler]\npriority_levels = 0\n{CUDA_UNIT}"),
        "scheduler.priority_levels",
        "between 1 and 16",
    );
}

#[test]
fn no_units_at_all() {
    rejected("[scheduler]\nseed = 1\n", "units", "no enabled unit");
}

#[test]
fn platform_contention_inline_or_file_not_both() {
    rejected(
        &format!(
            "[platform]\ncontention = {{ type = \"none\" }}\ncontention_file = \"profiles/orin-agx/platform.toml\"\n{CUDA_UNIT}"
        ),
        "platform",
        "not both",
    );
}

#[test]
fn environment_overrides_keys() {
    // Only this test sets the seed; other tests do not look at it.
    std::env::set_var("MICA__SCHEDULER__SEED", "777");
    let loaded = load(CUDA_UNIT).unwrap();
    std::env::remove_var("MICA__SCHEDULER__SEED");
    assert_eq!(loaded.config.scheduler.seed, 777);
}

#[test]
fn engine_settings_are_checked_by_their_engine() {
    rejected(
        &CUDA_UNIT.replace("{ type = \"sim\" }", "{ type = \"tensorflow\" }"),
        "units",
        "tensorflow",
    );
    rejected(
        &CUDA_UNIT.replace("{ type = \"sim\" }", "{ type = \"sim\", jiter = 0.1 }"),
        "units",
        "jiter",
    );
    rejected(
        &CUDA_UNIT.replace("{ type = \"sim\" }", "{ type = \"sim\", jitter = 0.7 }"),
        "units[0] (cuda).engine.jitter",
        "[0, 0.5)",
    );
    rejected(
        &CUDA_UNIT.replace("{ type = \"sim\" }", "\"sim\""),
        "units",
        "engine",
    );
    let loaded =
        load(&CUDA_UNIT.replace("{ type = \"sim\" }", "{ type = \"sim\", jitter = 0.1 }")).unwrap();
    assert_eq!(loaded.config.units[0].engine.jitter(), 0.1);
}

/// An onnx unit of `kind` with the given engine settings (inside `{ type = "onnx", ... }`).
fn onnx_unit(id: &str, kind: &str, extra_keys: &str, engine: &str) -> String {
    format!(
        "[[units]]\nid = \"{id}\"\nkind = \"{kind}\"\n{extra_keys}\nengine = {{ type = \"onnx\", {engine} }}\n"
    )
}

const TINY_ONNX: &str = r#"model = "../engines/tests/fixtures/tiny_resnet_b4.onnx""#;

#[test]
fn onnx_units_are_checked_against_their_kind_and_each_other() {
    let dla = |id: &str, core: u8, engine: &str| {
        onnx_unit(id, "dla", &format!("core = {core}\nmax_batch = 4"), engine)
    };
    // A DLA unit on the CPU provider.
    rejected(
        &dla("dla0", 0, &format!("{TINY_ONNX}, provider = \"cpu\"")),
        "units[0] (dla0).engine.provider",
        "runs on provider tensorrt",
    );
    // An unknown provider.
    rejected(
        &dla("dla0", 0, &format!("{TINY_ONNX}, provider = \"dla\"")),
        "units[0]",
        "unknown variant",
    );
    // A DLA core out of range.
    rejected(
        &dla("dla2", 2, &format!("{TINY_ONNX}, provider = \"tensorrt\"")),
        "units[0] (dla2).core",
        "DLA cores are 0 and 1",
    );
    // Two DLA units sharing an engine cache folder.
    let shared = format!("{TINY_ONNX}, provider = \"tensorrt\", engine_cache = \"/tmp/mica-trt\"");
    rejected(
        &(dla("dla0", 0, &shared) + &dla("dla1", 1, &shared)),
        "units[1] (dla1).engine.engine_cache",
        "#26680",
    );
    // Without engine_cache each gets its own folder, and the config loads.
    let own = format!("{TINY_ONNX}, provider = \"tensorrt\"");
    let loaded = load(&(dla("dla0", 0, &own) + &dla("dla1", 1, &own))).expect("loads");
    let caches: Vec<_> = loaded
        .config
        .units
        .iter()
        .map(|u| match &u.engine {
            mica_engines::EngineSettings::Onnx(onnx) => onnx.engine_cache.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_ne!(caches[0], caches[1]);
    assert!(caches[1].ends_with(".cache/tensorrt/dla1"), "{caches:?}");
    // A missing model file.
    rejected(
        &onnx_unit(
            "cpu",
            "cpu",
            "",
            "model = \"no-such-model.onnx\", provider = \"cpu\"",
        ),
        "units[0] (cpu).engine.model",
        "does not exist",
    );
    // No model at all.
    rejected(
        &onnx_unit("cpu", "cpu", "", "provider = \"cpu\""),
        "units[0] (cpu).engine.model",
        "needs an ONNX model",
    );
    // Two libraries in one process.
    let with_library =
        |path: &str| format!("{TINY_ONNX}, provider = \"cpu\", library = \"{path}\"");
    rejected(
        &(onnx_unit(
            "a",
            "cpu",
            "max_batch = 4",
            &with_library("/opt/a/libonnxruntime.so"),
        ) + &onnx_unit(
            "b",
            "cpu",
            "max_batch = 4",
            &with_library("/opt/b/libonnxruntime.so"),
        )),
        "units[1] (b).engine.library",
        "one ONNX Runtime library",
    );
    // BF16 has no ONNX Runtime provider.
    rejected(
        &onnx_unit(
            "bf16",
            "tensor_bf16",
            "",
            &format!("{TINY_ONNX}, provider = \"cuda\""),
        ),
        "units[0] (bf16).kind",
        "no BF16",
    );
}

/// Two simulated units of the Orin (a GPU and DLA0) and the tiny staged model
/// pipelined over them, as `config/tiny-sim-pipeline.toml`; `pipeline` adds or
/// replaces keys of `[pipeline]`.
fn tiny_pipeline(pipeline: &str) -> String {
    format!(
        r#"[model]
name = "tiny"
input_shape = [3, 32, 32]
output_shape = [10]

[[units]]
id = "gpu"
kind = "tensor_fp16"
engine = {{ type = "sim" }}
profile = "profiles/orin-agx/tensor_fp16.toml"

[[units]]
id = "dla0"
kind = "dla"
core = 0
engine = {{ type = "sim" }}
profile = "profiles/orin-agx/dla.toml"

[[units]]
id = "bare"
kind = "cuda_fp32"
engine = {{ type = "null" }}

[pipeline]
model = "tiny"
gpu = "gpu"
dla = ["dla0"]
{pipeline}
"#
    )
}

#[test]
fn a_valid_pipeline_resolves() {
    let loaded = load(&tiny_pipeline("option = \"a\"\ncuts = [2]\nbatch = 4")).unwrap();
    let pipeline = loaded.pipeline.expect("resolved");
    assert_eq!(pipeline.spec.stages.len(), 2);
    assert_eq!(pipeline.model.name, "tiny");
    let loaded = load(&tiny_pipeline(
        "name = \"tiny-pipe\"\n[[pipeline.stages]]\nunits = [\"dla0\"]\nblocks = [0, 2]\n\
         [[pipeline.stages]]\nunits = [\"gpu\"]\nblocks = [2, 4]",
    ))
    .unwrap();
    assert_eq!(loaded.pipeline.unwrap().model.name, "tiny-pipe");
}

#[test]
fn a_pipeline_naming_a_unit_that_does_not_exist_is_rejected() {
    rejected(
        &tiny_pipeline("").replace("gpu = \"gpu\"", "gpu = \"gpu9\""),
        "pipeline.gpu",
        "no unit \"gpu9\"",
    );
    rejected(
        &tiny_pipeline("").replace("dla = [\"dla0\"]", "dla = [\"dla7\"]"),
        "pipeline.dla[0]",
        "no unit \"dla7\"",
    );
    rejected(
        &tiny_pipeline("[[pipeline.stages]]\nunits = [\"gpu\", \"ghost\"]\nblocks = [0, 4]"),
        "pipeline.stages[0].units",
        "no unit \"ghost\"",
    );
}

#[test]
fn a_pipeline_unit_needs_a_profile() {
    rejected(
        &tiny_pipeline("").replace("gpu = \"gpu\"", "gpu = \"bare\""),
        "pipeline.gpu",
        "has no profile",
    );
}

#[test]
fn pipeline_stages_and_cut_points_must_cover_the_model() {
    rejected(
        &tiny_pipeline("option = \"a\"\ncuts = [9]"),
        "pipeline.cuts",
        "",
    );
    rejected(
        &tiny_pipeline("[[pipeline.stages]]\nunits = [\"gpu\"]\nblocks = [0, 3]"),
        "pipeline.stages",
        "",
    );
    rejected(
        &tiny_pipeline("[[pipeline.stages]]\nunits = [\"gpu\"]\nblocks = [0, 4]\nbatch = 0"),
        "pipeline.stages",
        "at least 1",
    );
    rejected(
        &tiny_pipeline("model = \"vgg\"").replace("model = \"tiny\"\ngpu", "gpu"),
        "pipeline.model",
        "unknown staged model",
    );
    rejected(
        &tiny_pipeline("[pipeline.tune]\nbatch_sizes = []"),
        "pipeline.tune.batch_sizes",
        "at least one value",
    );
}

#[test]
fn a_pipeline_must_match_the_served_model() {
    rejected(
        &tiny_pipeline("").replace("output_shape = [10]", "output_shape = [1000]"),
        "model.output_shape",
        "holds 10",
    );
    rejected(
        &tiny_pipeline("name = \"a/b\""),
        "pipeline.name",
        "without '/'",
    );
}

/// What `mica serve` refuses before it starts, `mica check` refuses with the same
/// message (serve is run on a config that fails only its pipeline, and stops there).
#[test]
fn mica_check_and_mica_serve_refuse_a_broken_pipeline_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken-pipeline.toml");
    let text = tiny_pipeline("").replace("gpu = \"gpu\"", "gpu = \"gpu9\"");
    let root = repo();
    let text = text.replace(
        "\"profiles/",
        &format!("\"{}/config/profiles/", root.display()),
    );
    std::fs::write(&path, text).unwrap();
    let (passed, checked) = mica_check(&path);
    assert!(!passed, "{checked}");
    let serve = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("MICA_CONFIG")
        .output()
        .expect("runs mica serve");
    assert!(!serve.status.success());
    let served = String::from_utf8_lossy(&serve.stderr);
    let message = ResolvedConfig::load(&path).unwrap_err().to_string();
    assert!(message.contains("pipeline.gpu"), "{message}");
    assert!(checked.contains(&message), "{checked}");
    assert!(served.contains(&message), "{served}");
}

/// The key, and each word of the problem, appear once: the error type puts them
/// together, and no layer repeats what the one below said.
#[test]
fn messages_name_the_key_once() {
    let cases = [
        (format!("[server]\nhttp_workers = 0\n{CUDA_UNIT}"), "server.http_workers"),
        (format!("[server]\nport = \"abc\"\n{CUDA_UNIT}"), "server.port"),
        (format!("[model]\nmax_batch = 0\n{CUDA_UNIT}"), "model.max_batch"),
        (
            format!("[model]\nimage_input = \"image\"\n[model.preprocessing]\nresize_shorter = 10\n{CUDA_UNIT}"),
            "model.preprocessing.resize_shorter",
        ),
        (
            format!("[platform]\ncontention = {{ type = \"pccs\", onset = 1 }}\n{CUDA_UNIT}"),
            "platform.contention",
        ),
        (
            format!("[scheduler]\npolicy = {{ type = \"fastest\" }}\n{CUDA_UNIT}"),
            "scheduler.policy.type",
        ),
        (
            format!("[scheduler]\npolicy = {{ type = \"slo\", latency_margin = 0.5 }}\n{CUDA_UNIT}"),
            "latency_margin",
        ),
        (format!("[admin]\ntoken = \"short\"\n{CUDA_UNIT}"), "admin.token"),
        (format!("{CUDA_UNIT}streams = 0\n"), "units[0] (cuda).streams"),
        (
            CUDA_UNIT.replace("{ type = \"sim\" }", "{ type = \"sim\", jitter = \"a\" }"),
            "units[0].engine",
        ),
        (
            tiny_pipeline("[pipeline.tune]\ngpu_utilization_threshold = 2.0"),
            "pipeline.tune.gpu_utilization_threshold",
        ),
        (tiny_pipeline("").replace("gpu = \"gpu\"", "gpu = \"x\""), "pipeline.gpu"),
    ];
    for (text, key) in cases {
        let message = load(&text).expect_err("must be rejected");
        assert_eq!(
            message.matches(key).count(),
            1,
            "the key {key:?} once: {message}"
        );
        assert!(!message.contains(" for key "), "{message}");
        assert!(!message.contains("\n"), "one line: {message}");
        let file = message.split(": ").next().unwrap();
        assert_eq!(message.matches(file).count(), 1, "the file once: {message}");
    }
}
