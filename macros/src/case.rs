//! Name conversions: method names to variant names, and serde's `rename_all` rules (copied
//! from serde_derive's `case.rs`, so the tag the derives pass to serde is the one serde expects).

/// `open_account` → `OpenAccount`: each `_`-separated part capitalised, underscores dropped.
pub(crate) fn upper_camel(snake: &str) -> String {
    let mut camel = String::with_capacity(snake.len());
    for part in snake.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            camel.extend(first.to_uppercase());
            camel.extend(chars);
        }
    }
    camel
}

/// serde's `snake_case` rule applied to a variant: `OpenAccount` → `open_account`.
pub(crate) fn snake(variant: &str) -> String {
    let mut snake = String::with_capacity(variant.len() + 4);
    for (i, ch) in variant.char_indices() {
        if i > 0 && ch.is_uppercase() {
            snake.push('_');
        }
        snake.push(ch.to_ascii_lowercase());
    }
    snake
}

/// serde's `#[serde(rename_all = "...")]` rule applied to a variant name, or `None` for a rule
/// serde does not know (serde reports that itself).
pub(crate) fn rename_variant(rule: &str, variant: &str) -> Option<String> {
    Some(match rule {
        "PascalCase" => variant.to_owned(),
        "lowercase" => variant.to_ascii_lowercase(),
        "UPPERCASE" => variant.to_ascii_uppercase(),
        "camelCase" => {
            let mut chars = variant.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_lowercase().to_string() + chars.as_str()
            })
        }
        "snake_case" => snake(variant),
        "SCREAMING_SNAKE_CASE" => snake(variant).to_ascii_uppercase(),
        "kebab-case" => snake(variant).replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => snake(variant).to_ascii_uppercase().replace('_', "-"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_become_variant_names() {
        assert_eq!(upper_camel("deposit"), "Deposit");
        assert_eq!(upper_camel("open_account"), "OpenAccount");
        assert_eq!(upper_camel("deposit_v2"), "DepositV2");
        assert_eq!(upper_camel("_private__x"), "PrivateX");
        assert_eq!(upper_camel("__"), "");
    }

    #[test]
    fn snake_case_is_serdes() {
        assert_eq!(snake("OpenAccount"), "open_account");
        assert_eq!(snake("DepositV2"), "deposit_v2");
        assert_eq!(snake("Step2a"), "step2a");
        assert_eq!(snake("HTTPCall"), "h_t_t_p_call");
    }

    #[test]
    fn rename_all_rules_match_serde() {
        let cases = [
            ("PascalCase", "OpenedAccount"),
            ("lowercase", "openedaccount"),
            ("UPPERCASE", "OPENEDACCOUNT"),
            ("camelCase", "openedAccount"),
            ("snake_case", "opened_account"),
            ("SCREAMING_SNAKE_CASE", "OPENED_ACCOUNT"),
            ("kebab-case", "opened-account"),
            ("SCREAMING-KEBAB-CASE", "OPENED-ACCOUNT"),
        ];
        for (rule, expected) in cases {
            assert_eq!(
                rename_variant(rule, "OpenedAccount").as_deref(),
                Some(expected)
            );
        }
        assert_eq!(rename_variant("Title Case", "Opened"), None);
        assert_eq!(rename_variant("camelCase", "").as_deref(), Some(""));
    }
}
