// The README's curl examples, run against a real `connhost serve`: each answers with the status it documents.

use std::process::Command;

use crate::support::server::Server;
use crate::support::*;

/// One documented example: the status it promises, keys the answer
/// contains, and the command.
struct Example {
    expect: u16,
    contains: Option<serde_json::Value>,
    command: String,
}

/// The `# expect: NNN` + `curl ...` pairs in the README's HTTP section.
fn examples() -> Vec<Example> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("## The HTTP service")
        .expect("the README has an HTTP section");
    let end = readme[start + 1..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 1 + i);
    let section = &readme[start..end];
    let mut examples = Vec::new();
    let mut in_block = false;
    let mut expect: Option<(u16, Option<serde_json::Value>)> = None;
    let mut command = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(promise) = line.strip_prefix("# expect: ") {
            let (status, body) = promise.split_once(' ').unwrap_or((promise, ""));
            let body = (!body.trim().is_empty())
                .then(|| serde_json::from_str(body).expect("the documented answer is JSON"));
            expect = Some((status.trim().parse().expect("a status code"), body));
        } else if !line.trim().is_empty() {
            command.push_str(line.trim_end_matches('\\'));
            command.push(' ');
            if !line.ends_with('\\') {
                let (expect, contains) = expect.take().expect("every example says what it expects");
                examples.push(Example {
                    expect,
                    contains,
                    command: std::mem::take(&mut command),
                });
            }
        }
    }
    examples
}

#[test]
fn the_readme_curl_examples_answer_as_documented() {
    let curl = Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "this test runs the README's curl examples: install curl (apt-get install -y curl)"
    );
    let examples = examples();
    assert!(
        examples.len() >= 5,
        "found only {} examples",
        examples.len()
    );
    let dir = PluginDir::with(&["mai", "bedrock", "daytona", "github"]);
    let server = Server::start(dir.path(), |_| {});
    for example in examples {
        assert!(example.command.starts_with("curl "), "{}", example.command);
        let command = example
            .command
            .replacen("curl ", "curl -w '\\n%{http_code}' ", 1)
            .replace("http://127.0.0.1:8080", server.url());
        let output = Command::new("sh").arg("-c").arg(&command).output().unwrap();
        assert!(
            output.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let (body, status) = stdout.rsplit_once('\n').expect("body, then the status");
        assert_eq!(
            status.parse::<u16>().unwrap(),
            example.expect,
            "{command}\n{body}"
        );
        let json: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {body}"));
        if example.expect >= 400 {
            assert!(json["error"]["code"].is_string(), "{json}");
        }
        if let Some(promised) = &example.contains {
            assert_contains(&json, promised, &command);
        }
    }
}

/// Asserts that every key of `promised` is in `actual` with the same value
/// (recursively for objects; arrays and other values compare whole).
fn assert_contains(actual: &serde_json::Value, promised: &serde_json::Value, context: &str) {
    match promised {
        serde_json::Value::Object(keys) => {
            for (key, value) in keys {
                assert_contains(&actual[key], value, context);
            }
        }
        other => assert_eq!(actual, other, "{context}"),
    }
}
