//! The shell, run natively over byte buffers and a scratch directory.

use std::collections::BTreeMap;

use super::{interactive_for_test, run_for_test};
use crate::ctx::Ctx;

/// A fresh scratch directory (one per call: tests run in parallel) as the cwd, with
/// `HOME=/root`.
pub fn scratch(name: &str) -> Ctx {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("toolbox-test-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let mut env = BTreeMap::new();
    env.insert("HOME".to_owned(), "/root".to_owned());
    env.insert("HOSTNAME".to_owned(), "web-0".to_owned());
    Ctx { cwd: dir.to_string_lossy().into_owned(), env, tty: false, depth: 0 }
}

fn sh(script: &str) -> (i32, String, String) {
    run_for_test(&scratch("sh"), script, b"")
}

fn out(script: &str) -> String {
    let (status, out, err) = sh(script);
    assert_eq!(status, 0, "{script}: stderr {err}");
    out
}

#[test]
fn words_and_quoting() {
    assert_eq!(out(r#"echo 'a  b' "c  d" e\ f"#), "a  b c  d e f\n");
    assert_eq!(out(r#"X='1 2'; echo "$X" $X "${X}x" '$X'"#), "1 2 1 2 1 2x $X\n");
    assert_eq!(out(r#"echo "a\"b" 'it'\''s' \$HOME"#), "a\"b it's $HOME\n");
    assert_eq!(out(r#"X=; set -- $X; echo $#; set -- "$X"; echo $#"#), "0\n1\n");
    assert_eq!(out("echo ~ ~/x"), "/root /root/x\n");
    assert_eq!(out("echo a#b # comment"), "a#b\n");
}

#[test]
fn variables_and_parameters() {
    assert_eq!(out("X=1 Y=2; echo $X$Y ${X}-${Y}"), "12 1-2\n");
    assert_eq!(
        out("set -- a 'b c' d; echo $# $1 $3; for a in \"$@\"; do echo \"[$a]\"; done"),
        "3 a d\n[a]\n[b c]\n[d]\n"
    );
    assert_eq!(out("echo ${U:-dflt} ${U:=set} $U ${U:+alt} ${#U}"), "dflt set set alt 3\n");
    assert_eq!(out("f=/a/b/c.tar.gz; echo ${f##*/} ${f%/*} ${f%%.*} ${f#*.}"), "c.tar.gz /a/b /a/b/c tar.gz\n");
    let (status, _, err) = sh("echo ${NOPE:?is required}");
    assert_eq!(status, 1);
    assert!(err.contains("NOPE: is required"), "{err}");
    // A prefix assignment reaches the command's environment only.
    assert_eq!(out("X=1; X=2 printenv X; echo $X"), "2\n1\n");
    assert_eq!(out("export A=b; env | grep '^A='"), "A=b\n");
    assert_eq!(out("A=1; unset A; echo \"[$A]\""), "[]\n");
}

#[test]
fn status_and_control() {
    assert_eq!(out("false; echo $?; true; echo $?"), "1\n0\n");
    assert_eq!(out("false && echo no || echo yes; true && echo and"), "yes\nand\n");
    assert_eq!(out("! false && echo negated"), "negated\n");
    assert_eq!(out("if false; then echo a; elif true; then echo b; else echo c; fi"), "b\n");
    assert_eq!(out("for i in 1 2 3; do if [ $i = 2 ]; then continue; fi; echo $i; done"), "1\n3\n");
    assert_eq!(out("i=0; while true; do i=$((i+1)); [ $i -ge 3 ] && break; done; echo $i"), "3\n");
    assert_eq!(out("i=0; until [ $i -eq 2 ]; do i=$((i+1)); echo $i; done"), "1\n2\n");
    assert_eq!(
        out("for x in a.txt b.md c; do case $x in *.txt) echo t;; *.md|*.rst) echo m;; *) echo o;; esac; done"),
        "t\nm\no\n"
    );
    assert_eq!(out("f() { echo in $1; return 4; }; f one; echo $?"), "in one\n4\n");
    assert_eq!(out("{ echo a; echo b; } | wc -l"), "2\n");
    assert_eq!(out("X=1; (X=2; echo $X); echo $X"), "2\n1\n");
    let (status, out, _) = sh("echo before; exit 3; echo after");
    assert_eq!((status, out.as_str()), (3, "before\n"));
    let (status, out, _) = sh("set -e; echo a; false; echo b");
    assert_eq!((status, out.as_str()), (1, "a\n"));
    // `set -e` does not fire in conditions.
    assert_eq!(sh("set -e; if false; then :; fi; false || true; echo ok").1, "ok\n");
    let (status, _, _) = sh("(exit 7)");
    assert_eq!(status, 7);
    // Unbounded recursion ends with an error, not a stack overflow.
    let (status, _, err) = sh("f() { f; }; f");
    assert_eq!((status, err.as_str()), (2, "sh: nesting too deep\n"));
    let (status, _, err) = sh("printf 'sh ./r.sh\\n' > r.sh; sh r.sh");
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("nesting too deep"), "{err}");
}

#[test]
fn substitution_and_arithmetic() {
    assert_eq!(out("echo $(echo a $(echo b)) `echo c`"), "a b c\n");
    assert_eq!(out("X=$(printf 'x\\n\\n\\n'); echo \"[$X]\""), "[x]\n");
    assert_eq!(out("echo $((1 + 2 * 3)) $(( (7 % 4) << 1 )) $((10 / 3)) $((3 > 2)) $((-5 + 1))"), "7 6 3 1 -4\n");
    assert_eq!(out("n=4; echo $((n * n)) $(($n - 1))"), "16 3\n");
    assert_eq!(out("false; echo $(true) $?"), "0\n");
    assert_eq!(out("X=$(false); echo $?"), "1\n");
    let (status, _, err) = sh("echo $((1/0))");
    assert_eq!(status, 1);
    assert!(err.contains("divide by zero"), "{err}");
}

#[test]
fn pipelines_and_redirections() {
    assert_eq!(out("printf 'b\\na\\nc\\na\\n' | sort | uniq -c | sort -rn | head -n 1"), "      2 a\n");
    assert_eq!(out("echo hi | cat | cat | wc -c"), "3\n");
    // 2>&1 sends stderr into the pipe; the order of redirections matters.
    assert_eq!(out("ls /nonexistent-dir 2>&1 | grep -c 'No such file'"), "1\n");
    assert_eq!(out("(echo out; echo err >&2) 2>/dev/null"), "out\n");
    let (_, stdout, stderr) = sh("ls /nonexistent-dir 2>/dev/null; echo x >&2");
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", "x\n"));
    assert_eq!(out("echo one > f; echo two >> f; cat f; wc -l < f"), "one\ntwo\n2\n");
    assert_eq!(out("cat <<EOF\nhome $HOME\nEOF\ncat <<'E'\n$HOME\nE"), "home /root\n$HOME\n");
    assert_eq!(out("cat <<-EOF\n\tindented\n\tEOF\nread a b <<< 'x y'; echo $b$a"), "indented\nyx\n");
    assert_eq!(out("echo $(ls /nonexistent-dir 2>&1 >/dev/null | wc -l)"), "1\n");
    assert_eq!(out("x=$(echo piped | while read l; do echo got $l; done); echo $x"), "got piped\n");
    let (status, _, err) = sh("echo > /nonexistent-dir/f");
    assert_eq!(status, 1);
    assert!(err.contains("can't create /nonexistent-dir/f: No such file or directory"), "{err}");
}

#[test]
fn unknown_command_is_127() {
    let (status, _, err) = sh("no-such-command arg");
    assert_eq!(status, 127);
    assert_eq!(err, "sh: no-such-command: not found\n");
    assert_eq!(out("no-such 2>/dev/null; echo $?"), "127\n");
}

#[test]
fn globbing() {
    let ctx = scratch("glob");
    let (status, out, err) = run_for_test(
        &ctx,
        "touch b.txt a.txt c.log .hidden; mkdir sub; touch sub/x.txt; echo *.txt; echo ?.log; echo sub/*; echo *.none; echo '*.txt' \"*\"; echo [ab].txt",
        b"",
    );
    assert_eq!(status, 0, "{err}");
    assert_eq!(out, "a.txt b.txt\nc.log\nsub/x.txt\n*.none\n*.txt *\na.txt b.txt\n");
}

#[test]
fn syntax_errors() {
    let (status, _, err) = sh("if true; then echo x");
    assert_eq!(status, 2);
    assert!(err.contains("syntax error"), "{err}");
    let (status, _, err) = sh("echo )");
    assert_eq!(status, 2);
    assert!(err.contains("syntax error"), "{err}");
}

#[test]
fn interactive_reads_line_by_line() {
    // `read` and `cat` get the lines after the command that runs them; the multi-line
    // `if` waits for its `fi`.
    let ctx = scratch("interactive");
    let input =
        b"read x\nfirst line\necho got $x\nhead -n 1\nfor-head\nif true\nthen echo in-if\nfi\nexit 5\necho never\n";
    let (status, out, err) = interactive_for_test(&ctx, input);
    assert_eq!(status, 5, "{err}");
    assert_eq!(out, "got first line\nfor-head\nin-if\n");
    let (_, out, _) = {
        let mut ctx = ctx.clone();
        let mut stdin = std::io::Cursor::new(b"cd /\necho $PWD\n".to_vec());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let args: Vec<String> = ["sh", "-i"].iter().map(|s| s.to_string()).collect();
        let status = super::main(&mut ctx, &args, &mut stdin, &mut out, &mut err);
        (status, String::from_utf8_lossy(&out).into_owned(), ())
    };
    assert!(out.ends_with(" # / # /\n/ # \n"), "{out:?}");
    let mut home = ctx.clone();
    home.env.insert("HOME".into(), ctx.cwd.clone());
    let mut stdin = std::io::Cursor::new(b"mkdir sub; cd sub\n".to_vec());
    let mut out = Vec::new();
    let args: Vec<String> = ["sh", "-i"].iter().map(|s| s.to_string()).collect();
    super::main(&mut home, &args, &mut stdin, &mut out, &mut Vec::new());
    assert_eq!(String::from_utf8_lossy(&out), "~ # ~/sub # \n");
}

#[test]
fn scripts_and_eval() {
    let ctx = scratch("script");
    let (status, out, err) = run_for_test(
        &ctx,
        "printf 'echo script $1 $#\\nexit 4\\n' > s.sh; sh s.sh a b; echo rc=$?; ./s.sh z; echo rc=$?; eval 'echo ev; X=9'; echo $X; . ./s.sh dot",
        b"",
    );
    assert_eq!(status, 4, "{err}");
    assert_eq!(out, "script a 2\nrc=4\nscript z 1\nrc=4\nev\n9\nscript dot 1\n");
}
