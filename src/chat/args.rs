//! The chat's view of an event's first argument: the `code` and `text` fields, read in one
//! pass without building a JSON tree. Field values stay raw JSON so a message text can go out
//! exactly as it came in (it is valid JSON already) and is decoded only to be checked.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::errors;
use super::rooms::RoomCode;

/// The fields the chat reads; others are skipped. A repeated key keeps its last value.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    /// `code`, raw.
    pub code: Option<&'a RawValue>,
    /// `text`, raw.
    pub text: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// The fields of the first argument; empty when there is none or it is not an object.
    pub fn of(args: &[&'a RawValue]) -> Fields<'a> {
        let fields = args
            .first()
            .and_then(|a| crate::json::raw_fields(a.get(), ["code", "text"]));
        let [code, text] = fields.unwrap_or_default();
        Fields { code, text }
    }

    /// The room code: six digits as a string, or the number itself.
    pub fn code(&self) -> Result<RoomCode, &'static str> {
        let raw = self.code.ok_or(errors::INVALID_CODE)?.get();
        let code = if raw.starts_with('"') {
            decode_str(raw).and_then(|s| RoomCode::parse(&s))
        } else {
            serde_json::from_str::<u32>(raw)
                .ok()
                .and_then(RoomCode::new)
        };
        code.ok_or(errors::INVALID_CODE)
    }

    /// The message text: (decoded, raw JSON string). Not checked for length or blankness.
    pub fn text(&self) -> Result<(Cow<'a, str>, &'a str), &'static str> {
        let raw = self.text.ok_or(errors::TEXT_REQUIRED)?.get();
        if !raw.starts_with('"') {
            return Err(errors::TEXT_REQUIRED);
        }
        let text = decode_str(raw).ok_or(errors::TEXT_REQUIRED)?;
        Ok((text, raw))
    }
}

/// Decodes a raw JSON string: borrowed when it has no escapes.
fn decode_str(raw: &str) -> Option<Cow<'_, str>> {
    // `raw` is valid JSON (a `RawValue`): a quoted literal without a backslash is its content.
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Some(Cow::Borrowed(inner));
    }
    match serde_json::from_str::<&str>(raw) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields<'_> {
        let raw: &RawValue = serde_json::from_str(json).unwrap();
        Fields::of(&[raw])
    }

    #[test]
    fn reads_code_as_string_or_number() {
        assert_eq!(
            fields(r#"{"code":"483920"}"#).code(),
            RoomCode::parse("483920").ok_or("")
        );
        assert_eq!(
            fields(r#"{"code":483920}"#).code(),
            RoomCode::parse("483920").ok_or("")
        );
        assert_eq!(
            fields(r#"{"code":" 483920 "}"#).code(),
            RoomCode::parse("483920").ok_or("")
        );
        assert_eq!(
            fields(r#"{"code":"\u0034\u0038\u0033920"}"#).code(),
            RoomCode::parse("483920").ok_or("")
        );
        for bad in [
            r#"{}"#,
            r#"{"code":null}"#,
            r#"{"code":"12345"}"#,
            r#"{"code":99999}"#,
            r#"{"code":483920.5}"#,
            r#"{"code":-483920}"#,
            r#"{"code":[1]}"#,
            r#"[1]"#,
            r#""x""#,
        ] {
            assert_eq!(fields(bad).code(), Err(errors::INVALID_CODE), "{bad}");
        }
    }

    #[test]
    fn reads_text_raw_and_decoded() {
        let f = fields(r#"{"x":{"text":"no"},"text":"a \"b\"\n","code":1}"#);
        let (text, raw) = f.text().unwrap();
        assert_eq!(text, "a \"b\"\n");
        assert_eq!(raw, r#""a \"b\"\n""#);
        let f = fields(r#"{"text":"plain"}"#);
        assert!(matches!(f.text().unwrap().0, Cow::Borrowed("plain")));
        for bad in [
            r#"{}"#,
            r#"{"text":1}"#,
            r#"{"text":null}"#,
            r#"{"text":["a"]}"#,
        ] {
            assert_eq!(
                fields(bad).text().map(|_| ()),
                Err(errors::TEXT_REQUIRED),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value() {
        assert_eq!(
            fields(r#"{"code":"111111","code":"222222"}"#).code(),
            RoomCode::parse("222222").ok_or("")
        );
    }

    #[test]
    fn no_arguments_or_a_non_object_read_as_empty() {
        assert!(Fields::of(&[]).code.is_none());
        assert!(fields("\"str\"").text.is_none());
        assert!(fields("null").code.is_none());
    }
}
