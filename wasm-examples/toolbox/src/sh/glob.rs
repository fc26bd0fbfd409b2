//! Patterns (`*`, `?`, `[…]`, `\x` for a literal x) for `case`, `${X#p}` and pathname
//! expansion against the filesystem.

use crate::ctx::Ctx;

/// Whether `pattern` matches all of `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    match_from(&p, &t)
}

fn match_from(p: &[char], t: &[char]) -> bool {
    // Iterative with one backtrack point per `*`, linear-ish and without recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(p, pi, t[ti]) {
                        if ok {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[…]` class at `p[start]`: whether it matches `c` and the index after it, or None
/// when the bracket is not closed (then it is a literal `[`).
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
            let hi = p[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Whether the pattern has an unescaped glob character.
pub fn has_magic(pattern: &str) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if matches!(c, '*' | '?' | '[') {
            return true;
        }
    }
    false
}

/// The pattern with its escapes removed: what a word is when nothing matched.
pub fn unescape(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Most paths one pattern may expand to.
const MAX_MATCHES: usize = 100_000;

/// Pathname expansion: the sorted paths matching `pattern` (relative patterns give
/// relative paths), empty when none.
pub fn expand(ctx: &Ctx, pattern: &str) -> Vec<String> {
    let absolute = pattern.starts_with('/');
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    // (display path, absolute path)
    let mut paths: Vec<(String, String)> =
        vec![if absolute { ("/".to_owned(), "/".to_owned()) } else { (String::new(), ctx.cwd.clone()) }];
    for (n, component) in components.iter().enumerate() {
        let last = n + 1 == components.len();
        let mut next = Vec::new();
        for (shown, abs) in &paths {
            let join = |name: &str| {
                let shown = if shown.is_empty() {
                    name.to_owned()
                } else if shown.ends_with('/') {
                    format!("{shown}{name}")
                } else {
                    format!("{shown}/{name}")
                };
                let abs = if abs.ends_with('/') { format!("{abs}{name}") } else { format!("{abs}/{name}") };
                (shown, abs)
            };
            if !has_magic(component) {
                let (shown, abs) = join(&unescape(component));
                if std::fs::symlink_metadata(&abs).is_ok() || (!last && abs == "/") {
                    next.push((shown, abs));
                }
                continue;
            }
            let mut names = crate::applets::fs::list_dir(abs).unwrap_or_default();
            names.sort();
            for name in names {
                if name.starts_with('.') && !component.starts_with('.') && !component.starts_with("\\.") {
                    continue;
                }
                if matches(component, &name) {
                    let (shown, abs) = join(&name);
                    if last || std::fs::metadata(&abs).is_ok_and(|m| m.is_dir()) {
                        next.push((shown, abs));
                    }
                }
                if next.len() >= MAX_MATCHES {
                    break;
                }
            }
        }
        paths = next;
        if paths.is_empty() {
            break;
        }
    }
    let mut out: Vec<String> = paths.into_iter().map(|(shown, _)| shown).collect();
    if pattern.ends_with('/') {
        for path in &mut out {
            path.push('/');
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("*.txt", "a.txt"));
        assert!(!matches("*.txt", "a.txv"));
        assert!(matches("a?c", "abc"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[!a-c]x", "bx"));
        assert!(matches("\\*", "*"));
        assert!(!matches("\\*", "x"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(matches("[", "["));
        assert!(has_magic("a*"));
        assert!(!has_magic("a\\*"));
    }
}
