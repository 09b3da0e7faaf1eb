//! The HTTP API (axum), served by the orders service: a person places an order, reads its
//! status (waiting for their own write, or until it is decided) and reads stock. Everything
//! else between services goes through the log.
//!
//! | method and path | body / query | answer |
//! |---|---|---|
//! | `POST /orders` | `{id?, customer, product, quantity, unit_price}` | `201 {id, status, after}` |
//! | `GET /orders/{id}` | `?after=TOKEN&wait=decided&timeout_ms=N` | `200` the order, `404`, `504` |
//! | `POST /orders/{id}/cancel` | | `200 {after}`, `422` when decided |
//! | `GET /stock/{product}`, `GET /stock` | | `200` the stock, `404` |
//! | `POST /customers` | `{id, name, email, currency}` | `201` |
//! | `PUT /rates/{currency}` | `{per_eur}` | `200` |
//! | `POST /products` | `{id, name, price, max_per_order}` | `201` |
//! | `POST /products/{id}/restock` | `{quantity, request?}` | `200` |
//!
//! `after` is the token a command returns (the positions of its events): a `GET` with it
//! waits until the view has applied them, so a client always reads its own writes. Amounts
//! are in cents of EUR.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{After, Api, ApiError, PlaceOrder};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Refused(_) | Self::UnknownCustomer(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotYet(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The router of the API.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/orders", post(place))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/stock", get(stocks))
        .route("/stock/{product}", get(stock))
        .route("/customers", post(register))
        .route("/rates/{currency}", put(rate))
        .route("/products", post(list))
        .route("/products/{id}/restock", post(restock))
        .with_state(api)
}

/// Serves the API on `listener` until `shutdown` completes.
///
/// # Errors
///
/// When serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(api))
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Serialize)]
struct PlacedBody {
    id: String,
    status: &'static str,
    after: String,
    replayed: bool,
}

async fn place(
    State(api): State<Api>,
    Json(order): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    let placed = api.place(order).await?;
    let body = PlacedBody {
        id: placed.id,
        status: "placed",
        after: placed.after.to_string(),
        replayed: placed.replayed,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
struct OrderQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    wait: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

async fn order(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(query): Query<OrderQuery>,
) -> Result<Response, ApiError> {
    let after: After = query.after.as_deref().unwrap_or_default().parse()?;
    let until_decided = match query.wait.as_deref() {
        None => false,
        Some("decided") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "wait={other:?}: the only wait is `decided`"
            )));
        }
    };
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(5_000).min(60_000));
    match api.order(&id, &after, until_decided, timeout).await? {
        Some(view) => {
            let mut body =
                serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let Some(map) = body.as_object_mut() {
                map.insert("id".into(), json!(id));
            }
            Ok(Json(body).into_response())
        }
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no order {id}") })),
        )
            .into_response()),
    }
}

async fn cancel(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let after = api.cancel(&id).await?;
    Ok(Json(json!({ "id": id, "after": after.to_string() })).into_response())
}

async fn stock(State(api): State<Api>, Path(product): Path<String>) -> Result<Response, ApiError> {
    match api.stock(&product).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no product {product}") })),
        )
            .into_response()),
    }
}

async fn stocks(State(api): State<Api>) -> Result<Response, ApiError> {
    let all: serde_json::Map<String, serde_json::Value> = api
        .stocks()
        .await?
        .into_iter()
        .map(|(id, view)| (id, json!(view)))
        .collect();
    Ok(Json(all).into_response())
}

#[derive(Deserialize)]
struct Register {
    id: String,
    name: String,
    email: String,
    currency: String,
}

async fn register(State(api): State<Api>, Json(r): Json<Register>) -> Result<Response, ApiError> {
    api.register_customer(&r.id, &r.name, &r.email, &r.currency)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": r.id }))).into_response())
}

#[derive(Deserialize)]
struct SetRate {
    per_eur: u64,
}

async fn rate(
    State(api): State<Api>,
    Path(currency): Path<String>,
    Json(r): Json<SetRate>,
) -> Result<Response, ApiError> {
    api.set_rate(&currency, r.per_eur).await?;
    Ok(Json(json!({ "currency": currency, "per_eur": r.per_eur })).into_response())
}

#[derive(Deserialize)]
struct List {
    id: String,
    name: String,
    price: u64,
    max_per_order: u32,
}

async fn list(State(api): State<Api>, Json(p): Json<List>) -> Result<Response, ApiError> {
    api.list_product(&p.id, &p.name, p.price, p.max_per_order)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": p.id }))).into_response())
}

#[derive(Deserialize)]
struct Restock {
    quantity: u64,
    #[serde(default)]
    request: Option<String>,
}

async fn restock(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(r): Json<Restock>,
) -> Result<Response, ApiError> {
    api.restock(&id, r.quantity, r.request.as_deref()).await?;
    Ok(Json(json!({ "id": id, "restocked": r.quantity })).into_response())
}
