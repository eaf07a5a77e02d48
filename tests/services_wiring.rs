//! Proves the test wiring: the real Redis and RabbitMQ started by
//! `scripts/services.sh` answer on loopback.

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use redis::AsyncCommands;

use crate::support::{amqp_url, redis_url};

#[tokio::test]
async fn redis_round_trips_a_key() {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis-server must be running: scripts/services.sh start");
    let key = format!("wiring:{}", uuid::Uuid::new_v4());
    let _: () = conn.set_ex(&key, "hello", 60).await.unwrap();
    let back: String = conn.get(&key).await.unwrap();
    assert_eq!(back, "hello");
    let _: () = conn.del(&key).await.unwrap();
    let gone: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(gone, None);
}

#[tokio::test]
async fn rabbitmq_declares_uses_and_deletes_a_queue() {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("rabbitmq-server must be running: scripts/services.sh start");
    let channel = conn.create_channel().await.unwrap();
    let name = format!("wiring.{}", uuid::Uuid::new_v4());
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            b"ping",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut got = None;
    for _ in 0..50 {
        got = channel
            .basic_get(name.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(got.expect("message back").delivery.data, b"ping");
    let left = channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(left, 0);
}
