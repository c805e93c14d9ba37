//! Text for Telegram: MarkdownV2 escaping and splitting at the 4,096-character limit of one message.
//!
//! Replies are written as plain text and sent with `parse_mode = MarkdownV2`, every special character
//! escaped, so nothing a user or a model wrote can break the formatting or be read as markup.

/// Most characters of one Telegram message (after entity parsing).
pub const MAX_MESSAGE_CHARS: usize = 4_096;

/// The characters MarkdownV2 reserves, which must be escaped with `\` everywhere outside code.
const SPECIAL: &[char] = &[
    '_', '*', '[', ']', '(', ')', '~', '`', '>', '#', '+', '-', '=', '|', '{', '}', '.', '!', '\\',
];

/// `text` with every MarkdownV2 special character escaped: shows exactly as written.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How many characters `c` takes once escaped.
fn escaped_len(c: char) -> usize {
    if SPECIAL.contains(&c) {
        2
    } else {
        1
    }
}

/// Splits plain `text` into pieces whose escaped form has at most `limit` characters each (Telegram counts
/// the characters it receives). Pieces break at the last line break that fits, else the last space, else
/// anywhere; no escape sequence is ever cut, and the pieces joined give back `text` (whitespace at a break
/// included). An empty text gives one empty piece.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut used = 0;
        let mut end = start;
        let (mut last_newline, mut last_space) = (None, None);
        while end < chars.len() && used + escaped_len(chars[end]) <= limit {
            used += escaped_len(chars[end]);
            match chars[end] {
                '\n' => last_newline = Some(end + 1),
                ' ' => last_space = Some(end + 1),
                _ => {}
            }
            end += 1;
        }
        if end < chars.len() {
            end = last_newline.or(last_space).unwrap_or(end);
        }
        pieces.push(chars[start..end].iter().collect());
        start = end;
    }
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_character_is_escaped() {
        assert_eq!(
            escape("P&L: +1.5% (SOL_USDT) [x] *y* `z` ~a~ >b #c =d |e {f} !g \\h -i"),
            "P&L: \\+1\\.5% \\(SOL\\_USDT\\) \\[x\\] \\*y\\* \\`z\\` \\~a\\~ \\>b \\#c \\=d \\|e \\{f\\} \\!g \\\\h \\-i"
        );
        assert_eq!(escape("plain text, 123"), "plain text, 123");
        assert_eq!(escape("émoji 🚀."), "émoji 🚀\\.");
    }

    #[test]
    fn long_text_splits_at_line_breaks_within_the_limit() {
        let line = "a".repeat(100);
        let text = vec![line.clone(); 100].join("\n");
        let pieces = split(&text, MAX_MESSAGE_CHARS);
        assert!(pieces.len() >= 3, "{}", pieces.len());
        for p in &pieces {
            assert!(escape(p).chars().count() <= MAX_MESSAGE_CHARS);
        }
        assert_eq!(pieces.concat(), text);
        // Each piece but the last ends at a line break.
        for p in &pieces[..pieces.len() - 1] {
            assert!(p.ends_with('\n'));
        }
    }

    #[test]
    fn escapes_count_and_are_never_cut() {
        // 4,096 dots escape to 8,192 characters: two pieces of 2,048 dots each.
        let text = ".".repeat(4_096);
        let pieces = split(&text, MAX_MESSAGE_CHARS);
        assert_eq!(pieces.len(), 2);
        for p in &pieces {
            let e = escape(p);
            assert!(e.chars().count() <= MAX_MESSAGE_CHARS);
            assert!(!e.ends_with('\\') || e.ends_with("\\\\"));
        }
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn words_break_at_spaces_and_unbroken_text_anywhere() {
        assert_eq!(split("aaa bbb ccc", 8), vec!["aaa bbb ", "ccc"]);
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(split("", 10), vec![""]);
        let multibyte = "é".repeat(5_000);
        let pieces = split(&multibyte, MAX_MESSAGE_CHARS);
        assert_eq!(pieces[0].chars().count(), MAX_MESSAGE_CHARS);
        assert_eq!(pieces.concat(), multibyte);
    }
}
