#!/usr/bin/env python3
"""Builds and runs a crate written from the docs alone, outside the workspace.

A new user copies the README's `[dependencies]` block and its domain example into a fresh
crate; this does exactly that, so the README cannot promise a set-up that does not work:

1. extracts the code blocks marked `<!-- scratch-crate: ... -->` in README.md (the
   `[dependencies]` block and `src/main.rs`) and in the book's first chapter (the same
   `[dependencies]` block, which must match the README's, and a complete program, built as an
   example);
2. makes a fresh temporary directory outside the workspace holding `keel` (a symbolic link to
   this checkout, so the README's `path = "../keel/..."` dependencies resolve as written) and
   `counter/`, a crate with exactly those dependencies;
3. builds it, runs the README's program twice and the book's once, and checks what they print.

Usage: scripts/scratch_crate.py [TARGET_DIR]. TARGET_DIR caches the build between runs
(default: `$CARGO_TARGET_DIR/scratch-crate`, else `target/scratch-crate`). The workspace's
`Cargo.lock` is copied in, so the scratch crate builds the same dependency versions as the
workspace. Exits non-zero, saying why, on the first failure.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*scratch-crate:\s*(?P<what>[^>]*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_,-]*)\s*$")


def fail(message: str) -> None:
    print(f"scripts/scratch_crate.py: {message}", file=sys.stderr)
    sys.exit(1)


def marked_blocks(path: Path) -> dict:
    """The code block following each `<!-- scratch-crate: WHAT -->` marker, by WHAT."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = {}
    i = 0
    while i < len(lines):
        marker = MARKER.search(lines[i])
        i += 1
        if not marker:
            continue
        what = marker.group("what").split(" (")[0]
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or not FENCE.match(lines[i]):
            fail(f"{path}: the marker `{what}` is not followed by a code block")
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            fail(f"{path}: the code block after `{what}` never closes")
        if what in blocks:
            fail(f"{path}: two blocks are marked `{what}`")
        blocks[what] = body
    return blocks


def unhide(lines: list) -> str:
    """A doc-test snippet as the compiler sees it: `# ` hides a line from readers only."""
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped == "#":
            out.append("")
        elif stripped.startswith("# "):
            out.append(indent + stripped[2:])
        elif stripped.startswith("##"):
            out.append(indent + stripped[1:])
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def need(blocks: dict, what: str, source: Path) -> list:
    if what not in blocks:
        fail(f"{source} has no code block marked `<!-- scratch-crate: {what} -->`")
    return blocks[what]


def run(command: list, cwd: Path, env: dict) -> str:
    print("    $ " + " ".join(command), flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        sys.stderr.write(done.stderr)
        fail(f"`{' '.join(command)}` failed with exit code {done.returncode} in {cwd}")
    return done.stdout


def main() -> None:
    readme = ROOT / "README.md"
    chapter = ROOT / "book" / "src" / "getting-started.md"
    from_readme = marked_blocks(readme)
    from_book = marked_blocks(chapter)
    dependencies = need(from_readme, "Cargo.toml dependencies", readme)
    if dependencies[:1] != ["[dependencies]"]:
        fail(f"{readme}: the dependencies block must start with `[dependencies]`")
    if need(from_book, "Cargo.toml dependencies", chapter) != dependencies:
        fail(f"the `[dependencies]` blocks of {readme} and {chapter} differ: make them one")
    main_rs = unhide(need(from_readme, "src/main.rs", readme))
    example = unhide(need(from_book, "src/main.rs", chapter))

    default_target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "scratch-crate"
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default_target
    scratch = Path(tempfile.mkdtemp(prefix="keel-scratch-"))
    if ROOT in scratch.resolve().parents:
        fail(f"the scratch directory {scratch} is inside the workspace")
    try:
        (scratch / "keel").symlink_to(ROOT, target_is_directory=True)
        crate = scratch / "counter"
        (crate / "src").mkdir(parents=True)
        (crate / "examples").mkdir()
        manifest = "\n".join(
            ['[package]', 'name = "counter"', 'version = "0.1.0"', 'edition = "2024"', ""]
            + dependencies
        )
        (crate / "Cargo.toml").write_text(manifest + "\n", encoding="utf-8")
        (crate / "src" / "main.rs").write_text(main_rs, encoding="utf-8")
        (crate / "examples" / "getting_started.rs").write_text(example, encoding="utf-8")
        shutil.copy(ROOT / "Cargo.lock", crate / "Cargo.lock")
        print(f"    scratch crate: {crate} (dependencies: README.md), target: {target}")

        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        env.pop("RUSTFLAGS", None)
        run(["cargo", "build", "--quiet", "--all-targets"], crate, env)
        first = run(["cargo", "run", "--quiet"], crate, env)
        second = run(["cargo", "run", "--quiet"], crate, env)
        versions = [re.search(r"counter c-1 is at version (\d+)", out) for out in (first, second)]
        if not all(versions):
            fail(f"the README's program printed no version:\n{first}{second}")
        if int(versions[1].group(1)) != int(versions[0].group(1)) + 1:
            fail(f"a second run should add one event:\n{first}{second}")
        out = run(["cargo", "run", "--quiet", "--example", "getting_started"], crate, env)
        if not out.strip():
            fail("the book's getting-started program printed nothing")
        sys.stdout.write("".join("      " + line + "\n" for line in (first + out).splitlines()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
