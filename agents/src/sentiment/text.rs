//! Text normalisation and tokenisation shared by training and scoring, and the hash that splits a data set.
//!
//! - URLs (`http://`, `https://`, `www.`) become the token `<url>`; cashtags (`$TSLA`, `$BRK.B`) become
//!   `<cashtag>`: the classifier learns how people talk, not which ticker they talk about (the token a score
//!   is for comes from [`super::tokens`], not from here).
//! - Words are runs of letters, digits and inner apostrophes, lower-cased (`Don't` → `don't`); `@` and `#`
//!   are dropped (`#Bitcoin` → `bitcoin`); `%`, `+`, `-`, `!` and `?` are tokens of their own, because
//!   "-5%" and "+5%" mean opposite things.

/// The token every URL becomes.
pub const URL: &str = "<url>";
/// The token every cashtag becomes.
pub const CASHTAG: &str = "<cashtag>";

/// Splits `text` into normalised tokens (see the module docs), appending them to `out`.
pub fn tokenize_into(text: &str, out: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if starts_url(rest) {
            out.push(URL.to_string());
            i += rest.find(char::is_whitespace).unwrap_or(rest.len());
            continue;
        }
        if c == '$' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            out.push(CASHTAG.to_string());
            i += 1 + cashtag_len(&rest[1..]);
            continue;
        }
        if c.is_alphanumeric() {
            let mut word = String::new();
            let mut end = 0;
            let mut chars = rest.char_indices().peekable();
            while let Some((at, ch)) = chars.next() {
                let inner_apostrophe = (ch == '\'' || ch == '’')
                    && chars.peek().is_some_and(|(_, n)| n.is_alphanumeric());
                if ch.is_alphanumeric() {
                    word.extend(ch.to_lowercase());
                } else if inner_apostrophe {
                    word.push('\'');
                } else {
                    break;
                }
                end = at + ch.len_utf8();
            }
            out.push(word);
            i += end;
            continue;
        }
        if matches!(c, '%' | '+' | '-' | '!' | '?') {
            out.push(c.to_string());
        }
        i += c.len_utf8();
    }
}

/// The normalised tokens of `text`.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    tokenize_into(text, &mut out);
    out
}

fn starts_url(s: &str) -> bool {
    let head = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    head.starts_with("http://") || head.starts_with("https://") || head.starts_with("www.")
}

/// Length of a cashtag's name after `$`: letters and digits, and `.` when a letter follows (`BRK.B`),
/// at most 10 bytes.
fn cashtag_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut n = 0;
    while n < b.len() && n < 10 {
        let ok = b[n].is_ascii_alphanumeric()
            || (b[n] == b'.' && b.get(n + 1).is_some_and(u8::is_ascii_alphabetic));
        if !ok {
            break;
        }
        n += 1;
    }
    n
}

/// FNV-1a, 64 bits, of the text's UTF-8 bytes: stable across runs, machines and Rust versions (unlike
/// `std`'s hasher), so a text always falls on the same side of a split.
pub fn fnv1a64(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether a text is in the held-out split: `fnv1a64(text) % 5 == 0`, about 20% of distinct texts. The same
/// text is always on the same side, so a duplicated tweet never straddles the split.
pub fn is_held_out(text: &str) -> bool {
    fnv1a64(text) % 5 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_cashtags_become_tokens() {
        assert_eq!(
            tokenize("$TSLA up 5% on Q3 beat https://t.co/abc $BRK.B, www.x.com/y"),
            [
                "<cashtag>",
                "up",
                "5",
                "%",
                "on",
                "q3",
                "beat",
                "<url>",
                "<cashtag>",
                "<url>"
            ]
        );
    }

    #[test]
    fn words_keep_inner_apostrophes_and_signs_are_tokens() {
        assert_eq!(
            tokenize("Don't sell!! -3% @elon #Bitcoin $100 'quoted'"),
            ["don't", "sell", "!", "!", "-", "3", "%", "elon", "bitcoin", "100", "quoted"]
        );
        assert_eq!(tokenize("Société Générale’s"), ["société", "générale's"]);
        assert!(tokenize("").is_empty());
        assert!(tokenize(" \n\t ...").is_empty());
    }

    #[test]
    fn the_split_is_a_fixed_function_of_the_text() {
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        let held = (0..1000)
            .filter(|i| is_held_out(&format!("tweet {i}")))
            .count();
        assert!((150..250).contains(&held), "{held}");
    }
}
