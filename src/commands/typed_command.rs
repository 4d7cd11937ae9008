//! The command line of this run as a user would type it, for the `source` lines of the
//! files a command writes (profiles, calibrations).
//!
//! What is recorded must be portable: the program is `mica` wherever its binary lay
//! (`target/release/mica`, a copy carried to another machine), paths inside the
//! working folder are relative to it, and an argument that a shell would split is
//! quoted, so that the line can be pasted back into a shell in a checkout of the
//! repository.

use std::path::Path;

/// `mica <args...>` with absolute paths under `cwd` made relative and shell-unsafe
/// arguments single-quoted. `args` excludes the program name.
pub fn as_typed<I, S>(args: I, cwd: &Path) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut words = vec!["mica".to_string()];
    for arg in args {
        let arg = arg.as_ref();
        let portable = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                format!("{flag}={}", relative_to(value, cwd))
            }
            _ => relative_to(arg, cwd),
        };
        words.push(shell_quote(&portable));
    }
    words.join(" ")
}

/// The command line of the running process, as typed (see [`as_typed`]).
pub fn current() -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    as_typed(std::env::args().skip(1), &cwd)
}

/// `value` relative to `cwd` when it is an absolute path inside it, else unchanged.
fn relative_to(value: &str, cwd: &Path) -> String {
    let path = Path::new(value);
    if !path.is_absolute() || cwd.as_os_str().is_empty() {
        return value.to_string();
    }
    match path.strip_prefix(cwd) {
        Ok(rest) if rest.as_os_str().is_empty() => ".".to_string(),
        Ok(rest) => rest.display().to_string(),
        Err(_) => value.to_string(),
    }
}

/// Single-quotes a word that contains anything a POSIX shell treats specially.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./,:=+@%".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_mica_and_repository_paths_are_relative() {
        let cwd = Path::new("/home/me/mica");
        let typed = as_typed(
            [
                "profile",
                "--config",
                "/home/me/mica/config/gpu.toml",
                "--out-dir=/home/me/mica/config/profiles/h100",
                "--units",
                "cpu,tensor_fp16",
            ],
            cwd,
        );
        assert_eq!(
            typed,
            "mica profile --config config/gpu.toml --out-dir=config/profiles/h100 \
             --units cpu,tensor_fp16"
        );
    }

    #[test]
    fn paths_outside_the_working_folder_stay_and_spaces_are_quoted() {
        let cwd = Path::new("/home/me/mica");
        let typed = as_typed(
            [
                "profile",
                "--out-dir",
                "/tmp/profiles",
                "--machine",
                "NVIDIA H100 80GB HBM3, 16 cores",
                "--note",
                "it's",
            ],
            cwd,
        );
        assert_eq!(
            typed,
            "mica profile --out-dir /tmp/profiles --machine 'NVIDIA H100 80GB HBM3, 16 cores' \
             --note 'it'\\''s'"
        );
    }

    #[test]
    fn the_working_folder_itself_and_a_sibling_with_its_prefix() {
        let cwd = Path::new("/home/me/mica");
        assert_eq!(as_typed(["/home/me/mica"], cwd), "mica .");
        assert_eq!(
            as_typed(["/home/me/mica-old/x.toml"], cwd),
            "mica /home/me/mica-old/x.toml"
        );
        assert_eq!(as_typed([""], cwd), "mica ''");
    }

    /// The profiles, platforms and benchmark records committed to the repository name
    /// their commands as a user would type them: no machine's folders, no copy of the
    /// binary where some harness put it.
    #[test]
    fn committed_records_carry_no_machine_paths() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut folders = vec![root.join("config"), root.join("bench/results")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("toml" | "json")
                ) {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 20, "found only {} records", files.len());
        let machine_paths = ["/work/", "/tmp/", "/home/", "/root/", ".device"];
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                if let Some(path) = machine_paths.iter().find(|p| line.contains(*p)) {
                    panic!(
                        "{}:{}: a machine path ({path}) in a committed record: {line}",
                        file.display(),
                        number + 1
                    );
                }
            }
        }
    }
}
