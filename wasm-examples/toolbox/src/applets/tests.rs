//! Applets, run natively (through the shell where a pipeline reads better).

use std::io::Cursor;

use super::multicall;
use crate::ctx::Ctx;
use crate::sh::run_for_test;
use crate::sh::tests::scratch;

/// Runs `argv` as the process entry would: (status, stdout, stderr).
fn call(ctx: &Ctx, argv: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut ctx = ctx.clone();
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let mut input = Cursor::new(stdin.to_vec());
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = multicall(&mut ctx, &argv, &mut input, &mut out, &mut err);
    (status, out, String::from_utf8_lossy(&err).into_owned())
}

fn sh_ok(ctx: &Ctx, script: &str) -> String {
    let (status, out, err) = run_for_test(ctx, script, b"");
    assert_eq!(status, 0, "{script}: {err}");
    out
}

#[test]
fn multicall_picks_the_applet() {
    let ctx = scratch("multicall");
    assert_eq!(call(&ctx, &["echo", "a"], b"").1, b"a\n");
    assert_eq!(call(&ctx, &["/bin/echo", "b"], b"").1, b"b\n");
    assert_eq!(call(&ctx, &["busybox", "echo", "c"], b"").1, b"c\n");
    assert_eq!(call(&ctx, &["toolbox", "/bin/echo", "d"], b"").1, b"d\n");
    assert_eq!(call(&ctx, &["-sh", "-c", "echo e"], b"").1, b"e\n");
    let (status, _, err) = call(&ctx, &["nosuch"], b"");
    assert_eq!((status, err.as_str()), (127, "sh: nosuch: not found\n"));
    let (status, _, err) = call(&ctx, &["busybox", "nosuch"], b"");
    assert_eq!((status, err.as_str()), (127, "sh: nosuch: not found\n"));
    let (status, out, _) = call(&ctx, &["ls", "--help"], b"");
    assert_eq!(status, 0);
    assert!(String::from_utf8_lossy(&out).starts_with("Usage: ls"));
    assert_eq!(call(&ctx, &["toolbox"], b"").0, 0);
}

#[test]
fn files() {
    let ctx = scratch("files");
    let out = sh_ok(
        &ctx,
        "mkdir -p a/b/c && echo hi > a/b/c/f && cp -r a z && cat z/b/c/f && mv z y && ls && rm -r y && ls -1 && \
         touch t && ls -a && rmdir a/b/c 2>&1; echo rc=$?; rm -f nothing; echo rm=$?",
    );
    assert_eq!(out, "hi\na\ny\na\n.\n..\na\nt\nrmdir: 'a/b/c': Directory not empty\nrc=1\nrm=0\n");
    let (status, _, err) = call(&ctx, &["ls", "/nope"], b"");
    assert_eq!((status, err.as_str()), (1, "ls: /nope: No such file or directory\n"));
    let (status, _, err) = call(&ctx, &["cat", "missing"], b"");
    assert_eq!((status, err.as_str()), (1, "cat: missing: No such file or directory\n"));
    let (status, _, err) = call(&ctx, &["rm", "missing"], b"");
    assert_eq!((status, err.as_str()), (1, "rm: can't remove 'missing': No such file or directory\n"));
    let (status, _, err) = call(&ctx, &["mkdir", "a"], b"");
    assert_eq!((status, err.as_str()), (1, "mkdir: can't create directory 'a': File exists\n"));
    let (status, _, err) = call(&ctx, &["cp", "a", "q"], b"");
    assert_eq!((status, err.as_str()), (1, "cp: omitting directory 'a'\n"));
    let long = String::from_utf8(call(&ctx, &["ls", "-l", "a/b/c"], b"").1).unwrap();
    assert!(long.starts_with("total 1\n-rw-r--r--    1 root     root             3 "), "{long}");
    assert!(long.ends_with(" f\n"), "{long}");
    assert_eq!(sh_ok(&ctx, "ls -R a"), "a:\nb\n\na/b:\nc\n\na/b/c:\nf\n");
    assert_eq!(
        sh_ok(&ctx, "test -d a && echo dir; test -f a/b/c/f && echo file; [ -e nope ] || echo none"),
        "dir\nfile\nnone\n"
    );
    assert_eq!(sh_ok(&ctx, "echo x | cat - a/b/c/f"), "x\nhi\n");
}

#[test]
fn text_tools() {
    let ctx = scratch("text");
    let input = "pear 3\nApple 10\nbanana 2\napple 1\npear 3\n";
    std::fs::write(ctx.resolve("fruit"), input).unwrap();
    assert_eq!(sh_ok(&ctx, "grep -i apple fruit"), "Apple 10\napple 1\n");
    assert_eq!(
        sh_ok(&ctx, "grep -c pear fruit; grep -v -n a fruit; grep -q nope fruit; echo rc=$?"),
        "2\n2:Apple 10\nrc=1\n"
    );
    assert_eq!(sh_ok(&ctx, "grep -n 'an\\+a' fruit; grep -E '^(pear|banana) [0-9]$' fruit | wc -l"), "3:banana 2\n3\n");
    assert_eq!(sh_ok(&ctx, "grep -F 'a 2' fruit; grep -w pea fruit; echo rc=$?"), "banana 2\nrc=1\n");
    assert_eq!(sh_ok(&ctx, "mkdir d; cp fruit d/f2; grep -r Apple ."), "./d/f2:Apple 10\n./fruit:Apple 10\n");
    let (status, _, err) = run_for_test(&ctx, "grep x nope", b"");
    assert_eq!((status, err.as_str()), (2, "grep: nope: No such file or directory\n"));
    assert_eq!(sh_ok(&ctx, "sort fruit | uniq | head -n 2"), "Apple 10\napple 1\n");
    assert_eq!(
        sh_ok(&ctx, "sort -k 2 -n fruit | head -1; sort -r -u fruit | tr 2>/dev/null; sort -ru fruit | wc -l"),
        "apple 1\n4\n"
    );
    assert_eq!(sh_ok(&ctx, "sort fruit | uniq -c | sort -rn | head -n 1"), "      2 pear 3\n");
    assert_eq!(sh_ok(&ctx, "sort fruit | uniq -d; sort fruit | uniq -u | wc -l"), "pear 3\n3\n");
    assert_eq!(
        sh_ok(&ctx, "wc -l fruit; wc < fruit; wc -w -l fruit"),
        "5 fruit\n      5      10      40\n      5      10 fruit\n"
    );
    assert_eq!(
        sh_ok(&ctx, "head -n 2 fruit; tail -n 1 fruit; tail -n +5 fruit; head -c 4 fruit; echo; tail -c 3 fruit"),
        "pear 3\nApple 10\npear 3\npear 3\npear\n 3\n"
    );
    assert_eq!(
        sh_ok(&ctx, "seq 3; seq -s, 2 2 6; seq 3 -1 1 | tr 2>/dev/null; seq 0.5 0.5 1.5"),
        "1\n2\n3\n2,4,6\n0.5\n1.0\n1.5\n"
    );
    assert_eq!(sh_ok(&ctx, "echo -n a; echo -e 'b\\tc'; echo '\\n'"), "ab\tc\n\\n\n");
    assert_eq!(
        sh_ok(&ctx, "printf '%5s|%-3d|%03x|%.2f|%c|%%\\n' ab 7 255 3.14159 xyz; printf '%s\\n' a b"),
        "   ab|7  |0ff|3.14|x|%\na\nb\n"
    );
    assert_eq!(sh_ok(&ctx, "basename /a/b.txt .txt; dirname /a/b.txt; basename /"), "b\n/a\n/\n");
}

#[test]
fn gzip_round_trip() {
    let ctx = scratch("gzip");
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    std::fs::write(ctx.resolve("blob"), &data).unwrap();
    assert_eq!(sh_ok(&ctx, "gzip blob && ls && gunzip blob.gz && ls"), "blob.gz\nblob\n");
    assert_eq!(std::fs::read(ctx.resolve("blob")).unwrap(), data);
    let (status, compressed, _) = call(&ctx, &["gzip", "-c"], &data);
    assert_eq!(status, 0);
    assert!(compressed.len() < data.len() / 10, "{}", compressed.len());
    let (status, plain, _) = call(&ctx, &["zcat"], &compressed);
    assert_eq!((status, plain == data), (0, true));
    let (status, plain, _) = call(&ctx, &["gzip", "-d"], &compressed);
    assert_eq!((status, plain == data), (0, true));
    assert_eq!(sh_ok(&ctx, "echo hello | gzip | gunzip"), "hello\n");
}

#[test]
fn tar_round_trip() {
    let ctx = scratch("tar");
    let out = sh_ok(
        &ctx,
        "mkdir -p src/sub && echo one > src/a && echo two > src/sub/b && tar -czf t.tgz src && tar -tzf t.tgz && \
         mkdir dst && tar -xzf t.tgz -C dst && cat dst/src/a dst/src/sub/b && tar cf plain.tar -C src . && tar tf plain.tar",
    );
    assert_eq!(out, "src/\nsrc/a\nsrc/sub/\nsrc/sub/b\none\ntwo\na\nsub/\nsub/b\n");
    // Verbose create to stdout lists to stderr; extract lists to stdout.
    let (status, _, err) = run_for_test(&ctx, "tar cvf - src > /dev/null", b"");
    assert_eq!((status, err.as_str()), (0, "src/\nsrc/a\nsrc/sub/\nsrc/sub/b\n"));
    let (status, _, err) = run_for_test(&ctx, "tar cf x.tar missing", b"");
    assert_eq!(status, 2);
    assert!(err.starts_with("tar: missing: Cannot stat: No such file or directory\n"), "{err}");
    // `..` members are refused.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_entry_type(tar::EntryType::Regular);
    header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    builder.append(&header, &b"x"[..]).unwrap();
    let evil = builder.into_inner().unwrap();
    let (status, _, err) = call(&ctx, &["tar", "xf", "-"], &evil);
    assert_eq!(status, 2);
    assert!(err.contains("Member name contains '..'"), "{err}");
    assert!(std::fs::metadata(std::path::Path::new(&ctx.cwd).join("../escape")).is_err());
}

#[test]
fn kubectl_cp_round_trip() {
    // `kubectl cp POD:/abs/dir local` runs `tar cf - /abs/dir` (or, with --retries,
    // `sh -c 'tar cf - /abs/dir | tail -c+N'`); `kubectl cp local POD:/dest/name` runs
    // `test -d /dest/name`, then `tar -xmf - -C /dest` with the archive on stdin.
    let ctx = scratch("kubectl");
    let src = ctx.abs("data");
    std::fs::create_dir_all(format!("{src}/nested")).unwrap();
    std::fs::write(format!("{src}/nested/file.txt"), "payload\n").unwrap();
    let (status, archive, err) = call(&ctx, &["tar", "cf", "-", &src], b"");
    assert_eq!(status, 0, "{err}");
    assert_eq!(err, "tar: Removing leading `/' from member names\n");
    let script = format!("tar cf - {src} | tail -c+1");
    let (status, resumed, _) = call(&ctx, &["sh", "-c", &script], b"");
    assert_eq!((status, resumed == archive), (0, true));
    let script = format!("tar cf - {src} | tail -c+1025");
    let (_, tail, _) = call(&ctx, &["sh", "-c", &script], b"");
    assert_eq!(tail, archive[1024..]);
    let dest = ctx.abs("dest");
    std::fs::create_dir(&dest).unwrap();
    assert_eq!(call(&ctx, &["test", "-d", &format!("{dest}/copy")], b"").0, 1);
    assert_eq!(call(&ctx, &["test", "-d", &dest], b"").0, 0);
    let (status, _, err) = call(&ctx, &["tar", "-xmf", "-", "-C", &dest], &archive);
    assert_eq!(status, 0, "{err}");
    let inner = src.trim_start_matches('/');
    assert_eq!(std::fs::read_to_string(format!("{dest}/{inner}/nested/file.txt")).unwrap(), "payload\n");
    let (status, _, err) =
        call(&ctx, &["tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", &dest], &archive);
    assert_eq!(status, 0, "{err}");
    let (status, _, err) = call(&ctx, &["tar", "xmf", "-", "-C", &dest], &archive);
    assert_eq!(status, 0, "{err}");
}

#[test]
fn misc() {
    let ctx = scratch("misc");
    assert_eq!(
        sh_ok(&ctx, "hostname; whoami; id; id -u; uname; uname -m"),
        "web-0\nroot\nuid=0(root) gid=0(root) groups=0(root)\n0\nWASI\nwasm32\n"
    );
    assert_eq!(
        sh_ok(&ctx, "date -d @0 '+%Y-%m-%d %H:%M:%S %Z'; date -u -d @86399 +%T"),
        "1970-01-01 00:00:00 UTC\n23:59:59\n"
    );
    assert!(sh_ok(&ctx, "uptime").contains("load average: n/a"));
    assert_eq!(
        sh_ok(&ctx, "which ls nosuch; echo rc=$?; command -v cat; type cd"),
        "/bin/ls\nrc=1\n/bin/cat\ncd is a shell builtin\n"
    );
    assert_eq!(sh_ok(&ctx, "env -i A=1 printenv A; printenv HOME; sleep 0.01 && echo slept"), "1\n/root\nslept\n");
    assert_eq!(
        sh_ok(&ctx, "[ 3 -lt 10 ] && [ abc = abc ] && [ -n x ] && [ -z '' ] && ! [ 1 -eq 2 ] && echo ok"),
        "ok\n"
    );
    assert_eq!(sh_ok(&ctx, "test 1 -eq 1 -a \\( x = y -o 2 -gt 1 \\) && echo yes"), "yes\n");
    let (status, _, _) = call(&ctx, &["[", "a"], b"");
    assert_eq!(status, 2);
    assert_eq!(sh_ok(&ctx, "clear | wc -c"), "6\n");
}

#[test]
fn http_clients_without_wasi_fail_to_connect() {
    // Outside a pod there is no wasi:http: both clients take their "can't connect" path.
    let ctx = scratch("http");
    let (status, _, err) = call(&ctx, &["curl", "-sS", "http://localhost/"], b"");
    assert_eq!(status, 7);
    assert!(err.starts_with("curl: (7) Failed to connect to localhost port 80"), "{err}");
    let (status, _, err) = call(&ctx, &["curl", "-s", "http://localhost/"], b"");
    assert_eq!((status, err.as_str()), (7, ""));
    let (status, _, err) = call(&ctx, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], b"");
    assert_eq!(status, 4);
    assert!(err.starts_with("wget: can't connect to remote host (127.0.0.1)"), "{err}");
    let (status, _, err) = call(&ctx, &["wget", "-qO-", "http://svc/"], b"");
    assert_eq!(status, 4, "{err}");
    let (status, _, err) = call(&ctx, &["wget", "-qO"], b"");
    assert_eq!((status, err.as_str()), (1, "wget: option requires an argument -- 'O'\n"));
    let (status, _, err) = call(&ctx, &["curl", "ftp://x/"], b"");
    assert_eq!((status, err.as_str()), (1, "curl: (1) Protocol \"ftp\" not supported\n"));
}

#[test]
fn extras() {
    let ctx = scratch("extras");
    assert_eq!(
        sh_ok(&ctx, "echo hello | tr a-z A-Z; echo 'a  b' | tr -s ' '; echo abc123 | tr -d '[:digit:]'"),
        "HELLO\na b\nabc\n"
    );
    assert_eq!(
        sh_ok(&ctx, "echo x | tee f1 f2 | cat; cat f1 f2; echo y | tee -a f1 >/dev/null; cat f1"),
        "x\nx\nx\nx\ny\n"
    );
    assert_eq!(
        sh_ok(&ctx, "echo 'a:b:c:d' | cut -d: -f2,4; echo abcdef | cut -c 2-3; echo 'x y' | cut -d' ' -f2-"),
        "b:d\nbc\ny\n"
    );
    let out = sh_ok(
        &ctx,
        "mkdir -p r/s; touch r/a.log r/s/b.log r/s/c.txt; find r -name '*.log'; find r -type d; find r -maxdepth 1 -type f",
    );
    assert_eq!(out, "r/a.log\nr/s/b.log\nr\nr/s\nr/a.log\n");
    assert_eq!(
        sh_ok(&ctx, "find r -name '*.txt' | xargs rm; find r -type f | wc -l; echo a b c | xargs -n 2 echo"),
        "2\na b\nc\n"
    );
    assert_eq!(sh_ok(&ctx, "printf '%02000d' 0 > r/s/k; du -s r; du -sh r/s/k"), "2\tr\n2.0K\tr/s/k\n");
    let (status, _, err) = run_for_test(&ctx, "find nope", b"");
    assert_eq!((status, err.as_str()), (1, "find: nope: No such file or directory\n"));
}
