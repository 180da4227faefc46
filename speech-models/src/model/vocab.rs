//! Turning CTranslate2's `vocabulary.txt` into the raw token bytes whisper.cpp reads.
//!
//! GPT-2's tokenizer stores every byte as a printable character (`Ġ` for a space, `Ċ` for a
//! newline); ggml wants the bytes back. The file holds one token per line, split on `\n` only
//! (tokens never contain a raw newline; some contain other line-breaking characters).

/// The marker that starts the special tokens; whisper.cpp makes those itself.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Why the vocabulary could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabError {
    #[error("vocabulary.txt is not UTF-8 (line {0})")]
    NotUtf8(usize),
    #[error("vocabulary.txt has no {END_OF_TEXT} token")]
    NoEndOfText,
    #[error("token {line} has character {ch:?}, which is not in GPT-2's byte alphabet")]
    NotByteLevel { line: usize, ch: char },
}

/// GPT-2's byte -> character table, inverted: character code -> byte.
fn unicode_to_byte() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let ch = if printable(b) {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(ch, b);
    }
    map
}

/// The regular tokens (everything before `<|endoftext|>`) as raw bytes.
pub fn regular_tokens(vocabulary: &[u8]) -> Result<Vec<Vec<u8>>, VocabError> {
    let table = unicode_to_byte();
    let mut tokens = Vec::new();
    for (line, raw) in vocabulary.split(|&b| b == b'\n').enumerate() {
        let text = std::str::from_utf8(raw).map_err(|_| VocabError::NotUtf8(line))?;
        if text == END_OF_TEXT {
            return Ok(tokens);
        }
        let bytes = text
            .chars()
            .map(|ch| {
                table
                    .get(&ch)
                    .copied()
                    .ok_or(VocabError::NotByteLevel { line, ch })
            })
            .collect::<Result<Vec<u8>, _>>()?;
        tokens.push(bytes);
    }
    Err(VocabError::NoEndOfText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_byte_level_characters() {
        let toks =
            regular_tokens("Ġhello\nĊ\n\n<|endoftext|>\n<|en|>".as_bytes()).expect("decodes");
        assert_eq!(toks, vec![b" hello".to_vec(), b"\n".to_vec(), Vec::new()]);
        assert_eq!(regular_tokens(b"abc"), Err(VocabError::NoEndOfText));
        assert!(matches!(
            regular_tokens("中\n<|endoftext|>".as_bytes()),
            Err(VocabError::NotByteLevel { .. })
        ));
    }
}
