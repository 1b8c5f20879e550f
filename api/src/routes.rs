//! The role every route of the API needs, in one table. The sensor's token check asks this
//! table for the route a request matched; a route missing from it is refused as if it
//! needed the admin token (and a test in the sensor checks its router has none).
//!
//! Roles: [`Role::Open`] needs no token (liveness, readiness, the API's description);
//! [`Role::Read`] needs the read token or the admin token; [`Role::Admin`] (anything that
//! changes the sensor: its settings, its snapshots, its recording jobs) needs the admin
//! token.

/// What a request needs its token for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No token.
    Open,
    /// The read token (or the admin token).
    Read,
    /// The admin token.
    Admin,
}

/// An HTTP method the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    /// The method's name in a request (`GET`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// A route: its method, its path template (axum's and `OpenAPI`'s `{name}`) and its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub role: Role,
}

const fn route(method: Method, path: &'static str, role: Role) -> Route {
    Route { method, path, role }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route(Method::Get, "/healthz", Role::Open),
    route(Method::Get, "/readyz", Role::Open),
    route(Method::Get, "/api/v1/openapi.json", Role::Open),
    route(Method::Get, "/api/v1/status", Role::Read),
    route(Method::Get, "/api/v1/segments", Role::Read),
    route(Method::Get, "/api/v1/snapshot", Role::Read),
    route(Method::Get, "/api/v1/live", Role::Read),
    route(Method::Get, "/api/v1/config", Role::Read),
    route(Method::Patch, "/api/v1/config", Role::Admin),
    route(Method::Get, "/metrics", Role::Read),
    route(Method::Get, "/api/v1/snapshots", Role::Read),
    route(Method::Post, "/api/v1/snapshots", Role::Admin),
    route(Method::Get, "/api/v1/snapshots/{name}", Role::Read),
    route(Method::Delete, "/api/v1/snapshots/{name}", Role::Admin),
    route(Method::Get, "/api/v1/snapshots/{name}/pcapng", Role::Read),
    route(Method::Get, "/api/v1/recordings", Role::Read),
    route(Method::Post, "/api/v1/recordings", Role::Admin),
    route(Method::Delete, "/api/v1/recordings/{name}", Role::Admin),
    route(Method::Get, "/api/v1/recordings/{name}/pcapng", Role::Read),
];

/// The role of `method` on the path template `path`; `None`: no such route.
#[must_use]
pub fn role_of(method: &str, path: &str) -> Option<Role> {
    ROUTES
        .iter()
        .find(|r| r.method.as_str() == method && r.path == path)
        .map(|r| r.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_in_the_table_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[i + 1..]
                    .iter()
                    .any(|b| a.method == b.method && a.path == b.path),
                "{a:?} twice"
            );
        }
    }

    #[test]
    fn only_reading_is_open_or_read() {
        for r in ROUTES {
            if r.role != Role::Admin {
                assert_eq!(r.method, Method::Get, "{r:?}");
            }
        }
        assert_eq!(role_of("PATCH", "/api/v1/config"), Some(Role::Admin));
        assert_eq!(role_of("GET", "/healthz"), Some(Role::Open));
        assert_eq!(role_of("PUT", "/api/v1/config"), None);
    }
}
