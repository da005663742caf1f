//! Just enough of HTTP/1.1 for the load generator: where a response ends in a byte buffer.

/// What a buffer holding the start of a response contains.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A whole response of `len` bytes; `close` when the server will close the connection.
    Complete {
        status: u16,
        len: usize,
        close: bool,
    },
    Invalid(String),
}

/// Finds the end of the first response in `buf` (Content-Length or chunked bodies).
pub fn parse_response(buf: &[u8]) -> Parsed {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > 64 * 1024 {
            Parsed::Invalid("response head over 64 KiB".into())
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parsed::Invalid("response head is not UTF-8".into());
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').nth(1).map(str::parse::<u16>) {
        Some(Ok(status)) if status_line.starts_with("HTTP/1.") => status,
        _ => return Parsed::Invalid(format!("bad status line {status_line:?}")),
    };
    let mut content_length = None;
    let mut chunked = false;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => content_length = Some(n),
                Err(_) => return Parsed::Invalid(format!("bad content-length {value:?}")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body_end = if chunked {
        match chunked_end(&buf[head_end..]) {
            Ok(Some(n)) => head_end + n,
            Ok(None) => return Parsed::Incomplete,
            Err(e) => return Parsed::Invalid(e),
        }
    } else if let Some(n) = content_length {
        head_end + n
    } else if status < 200 || status == 204 || status == 304 {
        head_end
    } else {
        // A body delimited by the connection's end cannot be timed on a keep-alive loop.
        return Parsed::Invalid(format!("HTTP {status} without content-length or chunked"));
    };
    if buf.len() < body_end {
        return Parsed::Incomplete;
    }
    Parsed::Complete {
        status,
        len: body_end,
        close,
    }
}

/// Length of a complete chunked body at the start of `body`, `None` when incomplete.
fn chunked_end(body: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let Some(line_end) = find(&body[at..], b"\r\n").map(|i| at + i) else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[at..line_end]).unwrap_or("?");
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        at = line_end + 2;
        if size == 0 {
            // Trailers (rare) end with an empty line, as does a body without them.
            return Ok(find_empty_line(&body[at..]).map(|n| at + n));
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

/// Length up to and including the empty line that ends a trailer section starting at `bytes`.
fn find_empty_line(bytes: &[u8]) -> Option<usize> {
    if bytes.starts_with(b"\r\n") {
        return Some(2);
    }
    find(bytes, b"\r\n\r\n").map(|i| i + 4)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
        for cut in 0..response.len() {
            assert_eq!(
                parse_response(&response[..cut]),
                Parsed::Incomplete,
                "{cut}"
            );
        }
        let mut two = response.to_vec();
        two.extend_from_slice(b"HTTP/1.1 200");
        let expected = Parsed::Complete {
            status: 200,
            len: response.len(),
            close: false,
        };
        assert_eq!(parse_response(&two), expected);
    }

    #[test]
    fn chunked_response_and_close() {
        let response =
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..response.len() {
            assert_eq!(
                parse_response(&response[..cut]),
                Parsed::Incomplete,
                "{cut}"
            );
        }
        let expected = Parsed::Complete {
            status: 403,
            len: response.len(),
            close: true,
        };
        assert_eq!(parse_response(response), expected);
        let trailers = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-t: 1\r\n\r\n";
        assert!(matches!(
            parse_response(trailers),
            Parsed::Complete { len, .. } if len == trailers.len()
        ));
    }

    #[test]
    fn invalid_responses() {
        for bad in [
            &b"SSH-2.0\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(matches!(parse_response(bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert!(matches!(
            parse_response(no_body),
            Parsed::Complete { status: 204, .. }
        ));
    }
}
