//! The invariants of ARCHITECTURE.md that can be checked by reading the
//! code: each test fails when the map is broken.
//!
//! - `actors` knows nothing about HTTP serving: neither its manifest nor
//!   anything it pulls in (Cargo.lock) is actix-web;
//! - every key a Lua script touches arrives in KEYS (or, for the zone
//!   groups, comes from a template `store/keys.rs` passes in, a listed
//!   exception), never by concatenation;
//! - only `store/keys.rs` spells Redis key names: no other source of
//!   `actors/src` or `src` holds a string literal with a key's family after
//!   a prefix (`"{}:users:"`) or a key's tail (`":settings:{task}"`);
//! - every file in `tests/` is built: the manifest turns Cargo's discovery
//!   of test files off (`autotests = false`), so each one is a `mod` of
//!   `tests/suite.rs` or a `[[test]]` of its own;
//! - the command line is a leaf: no module of `src` but `main.rs` uses
//!   `cli` (each command's arguments live with the command), so `cli`,
//!   `commands` and `startup` import one another in one direction only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Files under `dir` (recursively) whose name ends with `extension`.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------
// `actors` does not depend on actix-web

/// Crates that serve HTTP: `actors` must pull in none of them.
const HTTP_SERVING: &[&str] = &["actix-web", "actix-http", "actix-server", "actix-router"];

/// The dependency names of every dependency table of a manifest.
fn manifest_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let table = line.trim_matches(|c| c == '[' || c == ']');
            in_dependencies = table.ends_with("dependencies");
            // `[dependencies.name]` names one dependency itself.
            if let Some((head, name)) = table.rsplit_once('.')
                && head.ends_with("dependencies")
            {
                names.insert(name.trim_matches('"').to_owned());
            }
            continue;
        }
        if in_dependencies
            && let Some((key, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            let name = key.trim().split('.').next().unwrap_or_default();
            names.insert(name.trim_matches('"').to_owned());
        }
    }
    names
}

/// Package name -> the names it depends on, merged over the versions the
/// lock file holds.
fn lock_graph(lock: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let mut name = None;
        let mut dependencies = BTreeSet::new();
        let mut in_list = false;
        for line in block.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("name = ") {
                name = Some(value.trim_matches('"').to_owned());
            } else if line.starts_with("dependencies = [") {
                in_list = !line.ends_with(']');
            } else if in_list {
                if line.starts_with(']') {
                    in_list = false;
                } else {
                    // `"name"`, `"name version"` or `"name version (source)"`.
                    let entry = line.trim_end_matches(',').trim_matches('"');
                    let dependency = entry.split(' ').next().unwrap_or_default();
                    dependencies.insert(dependency.to_owned());
                }
            }
        }
        let name = name.expect("a lock-file package without a name");
        graph.entry(name).or_default().extend(dependencies);
    }
    graph
}

/// Every package `start` pulls in, itself included.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending = vec![start.to_owned()];
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone()) {
            pending.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_actors_crate_does_not_depend_on_http_serving() {
    let manifest = manifest_dependencies(&read(&root().join("actors/Cargo.toml")));
    assert!(
        manifest.contains("actix") && manifest.contains("lapin"),
        "the manifest reader missed dependencies of actors: {manifest:?}"
    );
    for name in HTTP_SERVING {
        assert!(
            !manifest.contains(*name),
            "actors/Cargo.toml depends on {name}; HTTP serving belongs to the service crate"
        );
    }

    let graph = lock_graph(&read(&root().join("Cargo.lock")));
    // The service crate serves HTTP: the graph reader sees that.
    assert!(
        closure(&graph, "taskqueue").contains("actix-web"),
        "the lock-file reader no longer finds actix-web under taskqueue"
    );
    let pulled = closure(&graph, "taskqueue-actors");
    assert!(pulled.contains("lapin") && pulled.contains("actix"));
    for name in HTTP_SERVING {
        assert!(
            !pulled.contains(*name),
            "taskqueue-actors pulls in {name} (Cargo.lock); HTTP serving belongs to the service crate"
        );
    }
}

// ---------------------------------------------------------------------------
// Lua scripts take their keys in KEYS

/// Script functions that fill a key template `store/keys.rs` passes in
/// ARGV, where part of the key (the zone, the task) is only known inside
/// the script. These scripts assume one Redis, not a Redis Cluster
/// (ARCHITECTURE.md, "Redis keys"); nothing else may build a key.
const TEMPLATE_BUILDERS: &[(&str, &str)] = &[
    ("preference_delete.lua", "zone_key"),
    ("user_timezone.lua", "fill"),
    ("user_timezone.lua", "place"),
    ("zone_place.lua", "zone_key"),
];

/// The script without its comments (`--` to the end of the line and
/// `--[[ ... ]]`), strings kept.
fn strip_lua_comments(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let quote = c;
            out.push(c);
            i += 1;
            while i < chars.len() && chars[i] != quote {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(chars[i]);
                    i += 1;
                }
                out.push(chars[i]);
                i += 1;
            }
            if i < chars.len() {
                out.push(chars[i]);
                i += 1;
            }
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            let rest: String = chars[i..].iter().take(4).collect();
            if rest == "--[[" {
                let tail: String = chars[i..].iter().collect();
                let end = tail.find("]]").map_or(tail.len(), |end| end + 2);
                i += tail[..end].chars().count();
            } else {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The arguments of the call whose `(` is at `open`, split on top-level
/// commas (strings and nested brackets respected), trimmed.
fn call_arguments(code: &str, open: usize) -> Vec<String> {
    let mut arguments = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in code[open + 1..].chars() {
        if let Some(q) = quote {
            current.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                current.push(c);
            }
            '(' | '[' | '{' => {
                depth += 1;
                current.push(c);
            }
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => arguments.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    arguments.push(current);
    arguments.into_iter().map(|a| a.trim().to_owned()).collect()
}

/// The positions right after every `name(` that is a call (not the
/// function's definition, not part of a longer name).
fn calls_of(code: &str, name: &str) -> Vec<usize> {
    let pattern = format!("{name}(");
    code.match_indices(&pattern)
        .filter(|(at, _)| {
            let before = code[..*at].chars().next_back();
            let word = before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
            !word && !code[..*at].trim_end().ends_with("function")
        })
        .map(|(at, _)| at + name.len())
        .collect()
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Script<'a> {
    file: &'a str,
    code: &'a str,
    used_builders: &'a mut BTreeSet<(String, String)>,
}

impl Script<'_> {
    /// Why `expression`, used as a key, is not one the script was given.
    fn key_problem(&mut self, expression: &str, depth: usize) -> Option<String> {
        let expression = expression.trim();
        if depth > 8 {
            return Some(format!("`{expression}`: too deep to follow"));
        }
        if expression.contains("..") {
            return Some(format!("`{expression}` builds a key by concatenation"));
        }
        if expression.starts_with("KEYS[") && expression.ends_with(']') {
            return None;
        }
        if is_identifier(expression) {
            return self.binding_problem(expression, depth);
        }
        if let Some(open) = expression.find('(')
            && expression.ends_with(')')
            && is_identifier(&expression[..open])
        {
            let function = &expression[..open];
            if TEMPLATE_BUILDERS.contains(&(self.file, function)) {
                self.used_builders
                    .insert((self.file.to_owned(), function.to_owned()));
                return None;
            }
            return Some(format!(
                "`{expression}`: a key made by `{function}`, which is not a listed template builder"
            ));
        }
        Some(format!("`{expression}` is not a key from KEYS"))
    }

    /// Why the variable `name` may hold something else than a given key:
    /// every assignment to it, and every call passing a parameter of that
    /// name, must pass a given key.
    fn binding_problem(&mut self, name: &str, depth: usize) -> Option<String> {
        let code = self.code;
        let mut bound = false;
        for line in code.lines().map(str::trim) {
            let statement = line.strip_prefix("local ").unwrap_or(line);
            if let Some(rest) = statement.strip_prefix(name)
                && let Some(value) = rest.trim_start().strip_prefix('=')
                && !value.starts_with('=')
            {
                bound = true;
                if let Some(problem) = self.key_problem(value, depth + 1) {
                    return Some(format!("`{name}` = {problem}"));
                }
            }
            if let Some(at) = line.find("function") {
                let signature = &line[at + "function".len()..];
                if let Some(open) = signature.find('(') {
                    let function = signature[..open].trim();
                    let close = signature.find(')').unwrap_or(signature.len());
                    let parameters: Vec<&str> = signature[open + 1..close]
                        .split(',')
                        .map(str::trim)
                        .collect();
                    if let Some(position) = parameters.iter().position(|p| *p == name) {
                        bound = true;
                        if !is_identifier(function) {
                            return Some(format!(
                                "`{name}` is a parameter of an anonymous function"
                            ));
                        }
                        for open in calls_of(code, function) {
                            let arguments = call_arguments(code, open);
                            let argument = arguments.get(position).cloned().unwrap_or_default();
                            if let Some(problem) = self.key_problem(&argument, depth + 1) {
                                return Some(format!("`{function}({name})`: {problem}"));
                            }
                        }
                    }
                }
            }
        }
        (!bound).then(|| format!("`{name}` is not bound to a key from KEYS"))
    }
}

/// Every problem with the keys of the script `file` (its comment-free
/// code), with the template builders it used.
fn lua_key_problems(
    file: &str,
    source: &str,
    used_builders: &mut BTreeSet<(String, String)>,
) -> Vec<String> {
    let code = strip_lua_comments(source);
    let mut script = Script {
        file,
        code: &code,
        used_builders,
    };
    let mut problems = Vec::new();
    for call in ["redis.call", "redis.pcall"] {
        for (at, _) in code.match_indices(&format!("{call}(")) {
            let arguments = call_arguments(&code, at + call.len());
            let command = arguments[0].trim_matches(|c| c == '\'' || c == '"');
            let Some(key) = arguments.get(1) else {
                continue;
            };
            if let Some(problem) = script.key_problem(key, 0) {
                problems.push(format!("{file}: {command} {problem}"));
            }
        }
    }
    problems
}

#[test]
fn every_key_a_lua_script_touches_arrives_in_keys() {
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    let scripts = files(&root().join("actors/lua"), "lua");
    assert!(scripts.len() > 10, "the scripts moved: {scripts:?}");
    for path in &scripts {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let source = read(path);
        assert!(
            source.starts_with("--") && source.contains("KEYS["),
            "{file}: every script opens with a header naming its KEYS and ARGV"
        );
        problems.extend(lua_key_problems(file, &source, &mut used));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let listed: BTreeSet<(String, String)> = TEMPLATE_BUILDERS
        .iter()
        .map(|(file, function)| ((*file).to_owned(), (*function).to_owned()))
        .collect();
    assert_eq!(
        used, listed,
        "a listed template builder is no longer used: drop it from TEMPLATE_BUILDERS"
    );
}

#[test]
fn the_lua_key_check_catches_what_it_forbids() {
    let mut used = BTreeSet::new();
    let mut check = |source: &str| lua_key_problems("probe.lua", source, &mut used);
    assert!(check("redis.call('GET', KEYS[1])\n").is_empty());
    assert!(check("local key = KEYS[2]\nredis.call('DEL', key)\n").is_empty());
    assert!(
        check("local function claim(key)\n  redis.call('SET', key, 1)\nend\nclaim(KEYS[1])\n")
            .is_empty()
    );
    // Concatenation, a key from ARGV, an unlisted builder, a key through
    // a parameter fed from ARGV, a comment that hides nothing.
    for bad in [
        "redis.call('HGETALL', ARGV[3] .. user .. ARGV[4])\n",
        "redis.call('GET', ARGV[1])\n",
        "local k = ARGV[1]\nredis.call('GET', k)\n",
        "local function k(t)\n  return t\nend\nredis.call('GET', k(ARGV[1]))\n",
        "local function claim(key)\n  redis.call('SET', key, 1)\nend\nclaim(ARGV[1]) -- KEYS[1]\n",
    ] {
        assert_eq!(check(bad).len(), 1, "not caught: {bad}");
    }
}

// ---------------------------------------------------------------------------
// Key names only in store/keys.rs

/// The string literals of a Rust source (comments skipped).
fn rust_string_literals(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            '\'' => {
                // A char literal ('x', '\n', '"'), else a lifetime.
                if chars.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            'r' if matches!(chars.get(i + 1), Some('"') | Some('#'))
                && !chars[..i]
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_') =>
            {
                let mut hashes = 0;
                let mut j = i + 1;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = chars[j + 1..].iter().collect();
                let end = rest.find(&closing).unwrap_or(rest.len());
                literals.push(rest[..end].to_owned());
                i = j + 1 + rest[..end].chars().count() + closing.chars().count();
            }
            '"' => {
                let mut literal = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if let Some(c) = chars.get(i) {
                        literal.push(*c);
                    }
                    i += 1;
                }
                i += 1;
                literals.push(literal);
            }
            _ => i += 1,
        }
    }
    literals
}

/// From the key formats of `keys.rs` (`"{}:users:{user}:settings:{task}"`):
/// the families (the first segment after the prefix) and every plain
/// segment.
fn key_segments(keys_rs: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let code = keys_rs.split("#[cfg(test)]").next().unwrap_or(keys_rs);
    let mut families = BTreeSet::new();
    let mut segments = BTreeSet::new();
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    for literal in rust_string_literals(code) {
        let Some(rest) = literal.strip_prefix("{}:") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(':').collect();
        if plain(parts[0]) {
            families.insert(parts[0].to_owned());
        }
        segments.extend(parts.iter().filter(|s| plain(s)).map(|s| (*s).to_owned()));
    }
    (families, segments)
}

/// Why `literal` looks like (part of) a Redis key name.
fn key_spelling(
    literal: &str,
    families: &BTreeSet<String>,
    segments: &BTreeSet<String>,
) -> Option<String> {
    // A family after a prefix placeholder: "{}:users:", "{prefix}:job:{id}".
    for family in families {
        let after = format!("}}:{family}");
        for (at, _) in literal.match_indices(&after) {
            let next = literal[at + after.len()..].chars().next();
            if matches!(next, None | Some(':')) {
                return Some(format!("the key family `{family}` after a prefix"));
            }
        }
    }
    // A key's tail: ":settings:{task}", ":fence", ":done".
    if let Some(rest) = literal.strip_prefix(':') {
        let first = rest.split([':', '{']).next().unwrap_or_default();
        if segments.contains(first) {
            return Some(format!("the key segment `{first}` as a key's tail"));
        }
    }
    None
}

#[test]
fn only_keys_rs_spells_key_names() {
    let keys_rs = root().join("actors/src/store/keys.rs");
    let (families, segments) = key_segments(&read(&keys_rs));
    for expected in ["schedule", "users", "index", "job", "running"] {
        assert!(
            families.contains(expected),
            "keys.rs reader missed {expected}"
        );
    }
    assert!(segments.contains("settings") && segments.contains("fence"));

    let mut problems = Vec::new();
    let sources = [root().join("actors/src"), root().join("src")]
        .iter()
        .flat_map(|dir| files(dir, "rs"))
        .filter(|path| *path != keys_rs)
        .collect::<Vec<_>>();
    assert!(sources.len() > 20, "the sources moved: {sources:?}");
    for path in sources {
        for literal in rust_string_literals(&read(&path)) {
            if let Some(why) = key_spelling(&literal, &families, &segments) {
                let shown = path.strip_prefix(root()).unwrap_or(&path).display();
                problems.push(format!("{shown}: {literal:?} spells {why}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "key names belong in actors/src/store/keys.rs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_key_spelling_check_catches_what_it_forbids() {
    let (families, segments) = key_segments(&read(&root().join("actors/src/store/keys.rs")));
    let spelled = |literal: &str| key_spelling(literal, &families, &segments).is_some();
    // What due_custom's call site passed before its keys went in KEYS.
    assert!(spelled("{}:users:"));
    assert!(spelled(":settings:{task}"));
    assert!(spelled("{prefix}:job:{id}:done"));
    assert!(spelled(":fence"));
    // Not keys: a correlation id, a module path, a log line.
    assert!(!spelled("{}:custom:{}"));
    assert!(!spelled("super::job::base64_bytes_opt"));
    assert!(!spelled("users: {count}"));
    let literals = rust_string_literals(
        "// \"{}:users:\"\nlet a = '\"'; let b: &'static str = r#\"x\"#; let c = \"y\\\"z\";",
    );
    assert_eq!(literals, vec!["x".to_owned(), "y\"z".to_owned()]);
}

// ---------------------------------------------------------------------------
// Every test file is built

/// The names of the test files (`tests/NAME.rs`) that neither `suite`
/// (`mod NAME;`) nor the manifest (`path = "tests/NAME.rs"`) builds.
fn unbuilt_test_files(names: &[String], suite: &str, manifest: &str) -> Vec<String> {
    let modules: BTreeSet<&str> = suite
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let targets: BTreeSet<&str> = manifest
        .lines()
        .filter_map(|line| {
            let path = line.trim().strip_prefix("path = \"tests/")?;
            path.strip_suffix(".rs\"")
        })
        .collect();
    names
        .iter()
        .filter(|name| {
            let name = name.as_str();
            name != "suite" && !modules.contains(name) && !targets.contains(name)
        })
        .cloned()
        .collect()
}

#[test]
fn every_test_file_is_a_module_of_the_suite_or_a_target_of_its_own() {
    let dir = root().join("tests");
    let names: Vec<String> = fs::read_dir(&dir)
        .expect("tests/")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| {
            path.file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(names.len() > 20, "tests/ read: {names:?}");
    let manifest = read(&root().join("Cargo.toml"));
    assert!(
        manifest.contains("autotests = false"),
        "the manifest lists its tests"
    );
    let unbuilt = unbuilt_test_files(&names, &read(&dir.join("suite.rs")), &manifest);
    assert!(
        unbuilt.is_empty(),
        "never compiled: add `mod NAME;` to tests/suite.rs: {unbuilt:?}"
    );
}

#[test]
fn the_unbuilt_test_check_catches_what_it_forbids() {
    let names = ["suite", "a", "b", "c"].map(String::from);
    let suite = "//! doc\nmod support;\nmod a;\n";
    let manifest = "[[test]]\nname = \"b\"\npath = \"tests/b.rs\"\n";
    assert_eq!(unbuilt_test_files(&names, suite, manifest), ["c"]);
}

/// The sources (by path relative to `src`, with their text) that use the
/// `cli` module, other than `main.rs` and `cli.rs` itself.
fn cli_users(sources: &[(String, String)]) -> Vec<String> {
    sources
        .iter()
        .filter(|(path, _)| path != "main.rs" && path != "cli.rs")
        .filter(|(_, text)| {
            text.lines()
                .map(str::trim_start)
                .filter(|line| !line.starts_with("//"))
                .any(|line| line.contains("cli::") || line.contains("crate::cli"))
        })
        .map(|(path, _)| path.clone())
        .collect()
}

#[test]
fn only_main_uses_the_command_line_module() {
    let src = root().join("src");
    let sources: Vec<(String, String)> = files(&src, "rs")
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap().display().to_string();
            (relative, read(&path))
        })
        .collect();
    assert!(sources.iter().any(|(path, _)| path == "cli.rs"));
    assert_eq!(cli_users(&sources), Vec::<String>::new());
}

#[test]
fn the_cli_check_catches_what_it_forbids() {
    let sources = vec![
        ("main.rs".to_owned(), "taskqueue::cli::run(cli)".to_owned()),
        (
            "commands/serve.rs".to_owned(),
            "use crate::{cli::ServeArgs, configuration};".to_owned(),
        ),
        (
            "startup.rs".to_owned(),
            "// the cli::Role of old\nuse crate::Role;".to_owned(),
        ),
    ];
    assert_eq!(cli_users(&sources), vec!["commands/serve.rs".to_owned()]);
}

/// The lines of a port's source (comments left out) that name a backend
/// crate's path.
fn backend_mentions(source: &str) -> Vec<String> {
    source
        .lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with("//"))
        .filter(|line| {
            ["redis::", "lapin::"]
                .iter()
                .any(|krate| line.contains(krate))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_ports_name_no_backend_crate() {
    for port in ["actors/src/store/mod.rs", "actors/src/broker/mod.rs"] {
        let source = read(&root().join(port));
        assert!(source.contains("pub trait"), "{port} holds a port");
        assert_eq!(backend_mentions(&source), Vec::<String>::new(), "{port}");
    }
}

#[test]
fn the_backend_check_catches_what_it_forbids() {
    let source =
        "//! Not a redis:: type in a comment\n    Redis(#[from] ::redis::RedisError),\n    Ok(())";
    assert_eq!(
        backend_mentions(source),
        vec!["Redis(#[from] ::redis::RedisError),".to_owned()]
    );
}
