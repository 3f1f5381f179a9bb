//! A coarse summary of a User-Agent ("Firefox on Linux") for people
//! reviewing their sessions: enough to recognise a device, too little to
//! fingerprint one. Only the summary and a hash are stored, never the
//! header itself.

/// "Browser on Platform", with `other` for what is not recognised.
pub fn summary(user_agent: &str) -> String {
    let ua = user_agent.to_ascii_lowercase();
    // Order matters: Edge and Opera say "chrome", Chrome says "safari".
    let browser = [
        ("edg/", "Edge"),
        ("opr/", "Opera"),
        ("firefox/", "Firefox"),
        ("chrome/", "Chrome"),
        ("chromium/", "Chromium"),
        ("safari/", "Safari"),
        ("curl/", "curl"),
        ("python", "Python"),
        ("okhttp", "OkHttp"),
        ("reqwest", "reqwest"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("other client", |(_, name)| name);
    let platform = [
        ("android", "Android"),
        ("iphone", "iOS"),
        ("ipad", "iOS"),
        ("windows", "Windows"),
        ("mac os", "macOS"),
        ("cros", "ChromeOS"),
        ("linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("unknown platform", |(_, name)| name);
    format!("{browser} on {platform}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn recognises_common_browsers() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                "Firefox on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36 Edg/126.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                "Safari on iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            ("curl/8.5.0", "curl on unknown platform"),
            ("", "other client on unknown platform"),
        ];
        for (ua, expected) in cases {
            assert_eq!(super::summary(ua), expected, "{ua}");
        }
    }
}
