//! Stamps the binary with the commit it was built from, for `--version`: from git when the
//! source is a checkout, "unknown" when it is not (a source tarball, a vendored copy).

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MMTRACE_COMMIT={commit}");
    // A new commit or checkout moves HEAD or the ref it names. Only files that exist: cargo
    // takes a missing one as changed at every build, which would rebuild mmtrace each time.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&dir);
        let head = git(&["symbolic-ref", "-q", "HEAD"]);
        let watched = [Some("HEAD"), head.as_deref(), Some("packed-refs")];
        for path in watched.into_iter().flatten().map(|p| dir.join(p)) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
