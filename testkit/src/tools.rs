//! External tools the tests drive, and what a test does when one is missing: it fails, naming
//! the tool, unless `BITRIVER_ALLOW_SKIP=1` is set (CI never sets it).

use std::path::{Path, PathBuf};

/// Set to `1` to let a test whose tool is missing pass with a `SKIPPED: ...` line.
pub const ALLOW_SKIP: &str = "BITRIVER_ALLOW_SKIP";

/// What a browser test needs: node, Chromium and the npm packages of `tests/browser`.
pub const BROWSER: &[&str] = &["node", "chromium", "playwright-core"];

/// The browser tests' npm packages (`scripts/browser-setup.sh` installs them).
const PLAYWRIGHT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/node_modules/playwright-core");

/// Where `name` is installed: `chromium` is `$CHROMIUM` (what `tests/browser/*.mjs` launch) or
/// `/usr/bin/chromium`; `playwright-core` is the browser tests' npm package; anything else is the
/// first executable `name` on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    match name {
        "chromium" => {
            let path = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
            path.is_file().then_some(path)
        }
        "playwright-core" => Path::new(PLAYWRIGHT).is_dir().then(|| PathBuf::from(PLAYWRIGHT)),
        _ => std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| is_executable(p)),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name`'s path for spawning it: where [`find`] found it, else the bare name (spawning then fails
/// with an error that names it).
pub fn path(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| PathBuf::from(name))
}

/// The ffmpeg binary.
pub fn ffmpeg() -> PathBuf {
    path("ffmpeg")
}

/// The ffprobe binary.
pub fn ffprobe() -> PathBuf {
    path("ffprobe")
}

/// True when `name` is installed (see [`find`]). Otherwise the calling test fails with a message
/// naming the tool, or, with `BITRIVER_ALLOW_SKIP=1`, prints `SKIPPED: ...` and this returns
/// false (the test then returns early):
///
/// ```no_run
/// if !testkit::require_tool("ffmpeg") {
///     return;
/// }
/// ```
#[track_caller]
pub fn require_tool(name: &str) -> bool {
    require_tools(&[name])
}

/// [`require_tool`] for several tools at once; the message names every missing one.
#[track_caller]
pub fn require_tools(names: &[&str]) -> bool {
    let allow_skip = std::env::var_os(ALLOW_SKIP).is_some_and(|v| v == "1");
    match check(names, allow_skip) {
        Ok(()) => true,
        Err(Missing::Skip(line)) => {
            eprintln!("{line}");
            false
        }
        Err(Missing::Fail(message)) => panic!("{message}"),
    }
}

/// What to do about missing tools.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    /// Print this `SKIPPED: ...` line and return.
    Skip(String),
    /// Fail the test with this message.
    Fail(String),
}

fn check(names: &[&str], allow_skip: bool) -> Result<(), Missing> {
    let missing: Vec<&str> = names.iter().copied().filter(|name| find(name).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let test = std::thread::current().name().unwrap_or("this test").to_owned();
    let what = format!("{test} needs {}, not installed", missing.join(", "));
    Err(if allow_skip {
        Missing::Skip(format!("SKIPPED: {what} ({ALLOW_SKIP}=1)"))
    } else {
        Missing::Fail(format!(
            "{what}: run ./scripts/setup.sh (browsers: ./scripts/browser-setup.sh), or set {ALLOW_SKIP}=1 to skip"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_tool_on_path_and_not_a_missing_one() {
        assert!(find("sh").is_some());
        assert!(find("bitriver-no-such-tool").is_none());
        assert_eq!(path("bitriver-no-such-tool"), PathBuf::from("bitriver-no-such-tool"));
    }

    #[test]
    fn a_missing_tool_fails_naming_it_unless_skips_are_allowed() {
        let Err(Missing::Fail(message)) = check(&["sh", "bitriver-no-such-tool"], false) else {
            panic!("a missing tool must fail the test");
        };
        assert!(message.contains("needs bitriver-no-such-tool, not installed"), "{message}");
        assert!(message.contains(ALLOW_SKIP), "{message}");
        let Err(Missing::Skip(line)) = check(&["bitriver-no-such-tool"], true) else {
            panic!("{ALLOW_SKIP}=1 must skip");
        };
        assert!(line.starts_with("SKIPPED: ") && line.contains("bitriver-no-such-tool"), "{line}");
    }

    #[test]
    fn installed_tools_pass() {
        assert_eq!(check(&["sh"], false), Ok(()));
        assert!(require_tool("sh"));
    }
}
