//! Command lines as an attacker writes them, and what the parser must make of them.

use super::*;

fn programs(line: &str) -> Vec<String> {
    analyse(line).programs
}

fn clear(line: &str) -> ShellLine {
    let l = analyse(line);
    assert!(l.opaque.is_empty(), "{line:?} is opaque: {:?}", l.opaque);
    l
}

fn opaque(line: &str, why: &str) -> ShellLine {
    let l = analyse(line);
    assert!(
        l.opaque.iter().any(|o| o.contains(why)),
        "{line:?}: expected opaque for {why:?}, got {:?}",
        l.opaque
    );
    l
}

fn cmd(p: &str, args: &[&str]) -> (String, Vec<String>) {
    (p.to_string(), args.iter().map(|a| a.to_string()).collect())
}

#[test]
fn one_command_with_its_arguments() {
    assert_eq!(
        clear("ls -la /tmp").commands,
        vec![cmd("ls", &["-la", "/tmp"])]
    );
    assert_eq!(clear("ls 'a b'").commands, vec![cmd("ls", &["a b"])]);
    assert_eq!(
        clear("echo \"x y\" z\\ w").commands,
        vec![cmd("echo", &["x y", "z w"])]
    );
    assert_eq!(
        clear("  systemctl restart nginx").commands,
        vec![cmd("systemctl", &["restart", "nginx"])]
    );
}

#[test]
fn spellings_of_a_program_are_its_basename() {
    for line in [
        "/bin/systemctl restart nginx",
        "/usr/bin/../bin/systemctl restart nginx",
        "\\systemctl restart nginx",
        "\"systemctl\" restart nginx",
        "sys''temctl restart nginx",
        "FOO=1 systemctl restart nginx",
    ] {
        assert_eq!(
            clear(line).commands,
            vec![cmd("systemctl", &["restart", "nginx"])],
            "{line}"
        );
    }
    assert_eq!(clear("rm -fr /x").commands, vec![cmd("rm", &["-fr", "/x"])]);
    assert_eq!(
        clear("rm -r -f /x").commands,
        vec![cmd("rm", &["-r", "-f", "/x"])]
    );
}

#[test]
fn every_program_of_a_list_pipeline_or_compound_is_seen() {
    for (line, want) in [
        ("ls && id", vec!["ls", "id"]),
        ("ls; id", vec!["ls", "id"]),
        ("ls || id", vec!["ls", "id"]),
        ("ls | grep x", vec!["ls", "grep"]),
        ("ls & id", vec!["ls", "id"]),
        ("(id)", vec!["id"]),
        ("{ id; }", vec!["id"]),
        (
            "if true; then id; else uname; fi",
            vec!["true", "id", "uname"],
        ),
        ("for i in 1 2; do id; done", vec!["id"]),
        ("while false; do id; done", vec!["false", "id"]),
        ("case x in x) id;; esac", vec!["id"]),
        ("! id", vec!["id"]),
        ("/usr/bin/env rm -rf /", vec!["env"]),
        ("ls\nid", vec!["ls", "id"]),
    ] {
        assert_eq!(clear(line).programs, want, "{line}");
    }
    let env = clear("/usr/bin/env rm -rf /");
    assert_eq!(env.commands, vec![cmd("env", &["rm", "-rf", "/"])]);
    let find = clear("find / -name x -delete");
    assert_eq!(
        find.commands,
        vec![cmd("find", &["/", "-name", "x", "-delete"])]
    );
}

#[test]
fn what_cannot_be_known_before_it_runs_is_opaque() {
    opaque("ls $(id)", "command substitution");
    opaque("ls `id`", "command substitution");
    opaque("X=$(rm -rf /) ls", "command substitution");
    opaque("cat <(id)", "process substitution");
    opaque("$X arg", "variable as the program");
    opaque("${X} arg", "variable as the program");
    opaque("/bin/r* -rf /", "glob or brace");
    opaque("{rm,x} -rf /", "glob or brace");
    opaque("eval ls", "`eval`");
    opaque("exec rm x", "`exec`");
    opaque(". ./script", "`.`");
    opaque("cat <<EOF\nx\nEOF", "here-document");
    opaque("cat <<< x", "here-document");
    // Found by fuzzing: the parser's tokenizer does not come back from this one.
    opaque("$( << | $(", "here-document");
    opaque("ls > /etc/passwd", "redirection to a file");
    opaque("ls >> log", "redirection to a file");
    opaque("sort < secrets", "redirection to a file");
    opaque("ls &> out", "redirection to a file");
    opaque("f() { id; }", "function definition");
    opaque("(( x = 1 ))", "arithmetic");
    opaque("[[ -f x ]]", "[[ ]]");
    opaque("ls 'x", "syntax error");
    opaque("ls )", "syntax error");
    // The programs that are visible are still listed.
    assert_eq!(programs("ls $(id)"), vec!["ls"]);
    assert_eq!(programs("eval ls"), vec!["eval"]);
}

#[test]
fn harmless_redirections_and_arguments_are_not_opaque() {
    clear("ls 2>/dev/null");
    clear("ls 2>&1");
    clear("ls >&2");
    clear("ls > /dev/null 2>&1");
    clear("ls $HOME");
    clear("rm *.tmp");
    assert_eq!(clear("ls $HOME").commands, vec![cmd("ls", &["$HOME"])]);
    let empty = clear("");
    assert!(empty.commands.is_empty() && empty.programs.is_empty());
    let assign = clear("FOO=1");
    assert!(assign.commands.is_empty());
}

#[test]
fn pathological_lines_are_refused_quickly_without_exhausting_the_stack() {
    let started = std::time::Instant::now();
    opaque(&"(".repeat(100_000), "too");
    opaque(&"$(".repeat(100_000), "too");
    opaque(
        &format!("{}id{}", "(".repeat(65), ")".repeat(65)),
        "too deeply nested",
    );
    opaque(&"if true; then ".repeat(70), "too deeply nested");
    opaque(&"x".repeat(MAX_LINE + 1), "too long");
    // Within the bounds, deep but legal nesting parses.
    let ok = format!("{}id{}", "(ls; ".repeat(30), ")".repeat(30));
    assert_eq!(clear(&ok).programs, vec!["ls", "id"]);
    // A long flat list is fine.
    let long = vec!["id"; 5_000].join("; ");
    assert_eq!(clear(&long).commands.len(), 5_000);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever the line, analysis returns (never panics), and a line it calls clear has
    /// a program for every command it found.
    #[test]
    fn any_line_is_analysed(line in "[ -~\\n]{0,300}") {
        let l = analyse(&line);
        for (p, _) in &l.commands {
            proptest::prop_assert!(l.programs.contains(p));
        }
    }

    #[test]
    fn shell_shaped_lines_are_analysed(parts in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::strategy::Just("ls"), proptest::strategy::Just("&&"),
            proptest::strategy::Just(";"), proptest::strategy::Just("|"),
            proptest::strategy::Just("("), proptest::strategy::Just(")"),
            proptest::strategy::Just("$("), proptest::strategy::Just("'"),
            proptest::strategy::Just("\""), proptest::strategy::Just("if"),
            proptest::strategy::Just("then"), proptest::strategy::Just("fi"),
            proptest::strategy::Just(">"), proptest::strategy::Just("<<"),
            proptest::strategy::Just("{"), proptest::strategy::Just("}"),
            proptest::strategy::Just("\\"), proptest::strategy::Just("*"),
        ],
        0..60,
    )) {
        let _ = analyse(&parts.join(" "));
    }
}
