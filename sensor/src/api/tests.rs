//! The role table (`podcap_api::ROUTES`) is the router's: every route the router serves is
//! in it and every route in it is served, and each answers a token as its role says.

use axum::{body::Body, http::StatusCode};
use podcap_api::{Role, ROUTES};
use tower::ServiceExt;

use super::{router, routes, ApiState};

#[test]
fn every_route_of_the_router_is_in_the_role_table_and_back() {
    let served = routes();
    for (method, path, _) in &served {
        assert!(
            ROUTES.iter().any(|r| r.method == *method && r.path == *path),
            "{method:?} {path} is served but has no role in podcap_api::ROUTES"
        );
    }
    for route in ROUTES {
        assert!(
            served
                .iter()
                .any(|(m, p, _)| *m == route.method && *p == route.path),
            "{route:?} is in the table but not served"
        );
    }
}

async fn answer(state: &ApiState, method: &str, path: &str, token: Option<&str>) -> StatusCode {
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(path.replace("{name}", "x"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn each_route_answers_a_token_as_its_role_says() {
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState::builder(dir.path())
        .interfaces(["eth0"])
        .token(Some("read"))
        .admin_token(Some("admin"))
        .build()
        .unwrap();
    for route in ROUTES {
        let (method, path) = (route.method.as_str(), route.path);
        let anonymous = answer(&state, method, path, None).await;
        let read = answer(&state, method, path, Some("read")).await;
        match route.role {
            Role::Open => {
                assert_ne!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
            Role::Read => {
                assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert!(
                    read != StatusCode::UNAUTHORIZED && read != StatusCode::FORBIDDEN,
                    "{method} {path}: {read}"
                );
            }
            Role::Admin => {
                assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
                assert_eq!(read, StatusCode::FORBIDDEN, "{method} {path}");
                let admin = answer(&state, method, path, Some("admin")).await;
                assert!(
                    admin != StatusCode::UNAUTHORIZED && admin != StatusCode::FORBIDDEN,
                    "{method} {path}: {admin}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState::builder(dir.path()).build().unwrap();
    let response = router(state)
        .oneshot(
            axum::http::Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(body, podcap_api::openapi::json().as_bytes());
}
