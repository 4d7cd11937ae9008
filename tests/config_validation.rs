//! Config validation: every rejected case names the file and the key, and the shipped
//! configs load.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use mica::config::LoadedConfig;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `text` as a config file in a temporary folder (never into `config/`), its
/// `profiles/...` and `../engines/...` paths pointed at the repository's, and loads it.
fn load(text: &str) -> Result<LoadedConfig, String> {
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
    let result = LoadedConfig::load(file.path()).map_err(|e| e.to_string());
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
        LoadedConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let orin = LoadedConfig::load(&repo().join("config/orin-agx-sim.toml")).unwrap();
    let ids: Vec<&str> = orin.config.units.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["cpu", "cuda", "amp", "dla0", "dla1"]);
    assert!(orin.profiles.iter().all(Option::is_some));
}

/// Every shipped config loads, or fails only for what a checkout may lack: the torch
/// feature, or model files that `scripts/export_model.py` writes into models/.
#[test]
fn every_shipped_config_loads_or_lacks_only_models_or_the_torch_feature() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "toml") || name.starts_with("test-") {
            continue;
        }
        checked += 1;
        if let Err(error) = LoadedConfig::load(&path) {
            let message = error.to_string();
            let lacks_model = message.contains("/models/") && message.contains("does not exist");
            let lacks_torch = message.contains("not built into this binary");
            assert!(lacks_model || lacks_torch, "{name}: {message}");
        }
    }
    assert!(checked >= 10, "only {checked} shipped configs found");
}

#[test]
fn a_missing_file_is_named() {
    let message = LoadedConfig::load(Path::new("config/no-such-file.toml"))
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
