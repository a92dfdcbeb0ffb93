//! The Account App: a third-party app sends a user to the login page, the user
//! approves in their own client, the app gets the user back with a one-time
//! result code and redeems it for the UID.

use medvault_client::NewAccount;
use medvault_core::ParticipantKind;
use medvault_testkit::{Backend, TestServer};
use serde_json::json;

on_both_backends!(an_app_learns_who_logged_in_exactly_once);

const RETURN: &str = "https://app.example/back";

fn entry(server: &TestServer, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&server.patient_url(path)).unwrap();
    for (key, value) in pairs {
        url.query_pairs_mut().append_pair(key, value);
    }
    url.to_string()
}

fn no_redirects(server: &TestServer) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&server.ca_pem).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn an_app_learns_who_logged_in_exactly_once(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |raw| {
        raw.account_app_return_urls = Some(vec![RETURN.to_owned()]);
    })
    .await
    else {
        return;
    };
    let browser = no_redirects(&server);
    let sdk = server.sdk();
    let registered = sdk
        .register(NewAccount {
            kind: ParticipantKind::Patient,
            display_name: None,
            password: None,
            tans: 0,
            software_certificate: false,
        })
        .await
        .unwrap();
    let session = sdk
        .login_superpin(registered.uid, &registered.superpin)
        .await
        .unwrap();

    // Only configured return URLs: no open redirect.
    for bad in [
        "https://evil.example/back",
        "https://app.example/back/x",
        "javascript:alert(1)",
    ] {
        let response = browser
            .get(entry(
                &server,
                "/account/login",
                &[("return_to", bad), ("state", "s")],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    let start = browser
        .get(entry(
            &server,
            "/account/login",
            &[("return_to", RETURN), ("state", "app-state-1")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303);
    let page_path = start.headers()["location"].to_str().unwrap().to_owned();
    let code = page_path.split("code=").nth(1).unwrap().to_owned();
    let page = browser
        .get(server.patient_url(&page_path))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let text = page.text().await.unwrap();
    assert!(
        text.contains(&code) && text.contains("app.example"),
        "{text}"
    );
    assert!(
        !text.to_lowercase().contains("<input"),
        "the page asks for nothing"
    );
    // The page with a wrong code shows nothing.
    let wrong_page = browser
        .get(server.patient_url(&page_path.replace(&code, "AAAA-AAAA-AAAA-AAAA")))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_page.status(), 404);

    // Not approved yet: the page keeps waiting.
    assert_eq!(
        browser
            .get(server.patient_url(&page_path))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        session
            .approve_account_request(&code.to_lowercase())
            .await
            .unwrap(),
        "app.example"
    );
    assert_eq!(
        session
            .approve_account_request(&code)
            .await
            .unwrap_err()
            .status(),
        Some(400),
        "a code is approved once"
    );

    // The page now sends the browser back, once.
    let back = browser
        .get(server.patient_url(&page_path))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 303);
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            location.scheme(),
            location.host_str().unwrap(),
            location.path()
        ),
        RETURN
    );
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "app-state-1");
    let result_code = pairs["code"].clone();
    assert_eq!(
        browser
            .get(server.patient_url(&page_path))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The app's backend redeems the result once.
    let redeem = |code: String, return_to: &'static str| {
        let browser = browser.clone();
        let url = server.patient_url("/api/v1/account-requests/result");
        async move {
            browser
                .post(url)
                .json(&json!({ "code": code, "return_to": return_to }))
                .send()
                .await
                .unwrap()
        }
    };
    // A code is bound to the app it was issued for: another app's backend
    // cannot redeem it (and the attempt uses it up).
    let stolen = redeem(result_code.clone(), "https://other.example/back").await;
    assert_eq!(stolen.status(), 400);
    let first = redeem(result_code.clone(), RETURN).await;
    assert_eq!(first.status(), 400, "the refused attempt used the code up");
    // A fresh round, redeemed by the right app.
    let start = browser
        .get(entry(
            &server,
            "/account/login",
            &[("return_to", RETURN), ("state", "app-state-1")],
        ))
        .send()
        .await
        .unwrap();
    let page_path = start.headers()["location"].to_str().unwrap().to_owned();
    let code = page_path.split("code=").nth(1).unwrap().to_owned();
    session.approve_account_request(&code).await.unwrap();
    let back = browser
        .get(server.patient_url(&page_path))
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    let result_code = pairs["code"].clone();
    let first = redeem(result_code.clone(), RETURN).await;
    assert_eq!(first.status(), 200);
    let result: serde_json::Value = first.json().await.unwrap();
    assert_eq!(result["uid"], registered.uid.to_string());
    assert_eq!(result["purpose"], "login");
    assert_eq!(result["state"], "app-state-1");
    assert_eq!(redeem(result_code, RETURN).await.status(), 400);

    // Guessing approval codes locks the guesser out.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            session
                .approve_account_request("ZZZZ-ZZZZ-ZZZZ-ZZZZ")
                .await
                .unwrap_err()
                .status()
                .unwrap(),
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // One address cannot fill the table with requests.
    let mut last = 0;
    for _ in 0..40 {
        last = browser
            .get(entry(&server, "/account/login", &[("return_to", RETURN)]))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
    server.clock.advance(time::Duration::hours(2));

    // Expired after ten minutes.
    let late = browser
        .get(entry(
            &server,
            "/account/register",
            &[("return_to", RETURN)],
        ))
        .send()
        .await
        .unwrap();
    let late_path = late.headers()["location"].to_str().unwrap().to_owned();
    server.clock.advance(time::Duration::minutes(11));
    assert_eq!(
        browser
            .get(server.patient_url(&late_path))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
