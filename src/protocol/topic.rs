//! Topic names and topic filters (4.7): validation and wildcard matching.

/// Is `topic` a valid topic name for PUBLISH: non-empty, no `+` or `#` [MQTT-3.3.2-2]
/// [MQTT-4.7.3-1]. (UTF-8 validity is the decoder's job.)
pub fn valid_topic_name(topic: &str) -> bool {
    let _ = topic;
    unimplemented!("topic helper")
}

/// Is `filter` a valid topic filter: non-empty, `#` alone in the last level
/// [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3].
pub fn valid_topic_filter(filter: &str) -> bool {
    let _ = filter;
    unimplemented!("topic helper")
}

/// Does `filter` match `topic`? Assumes both are valid. Topics starting with `$`
/// are not matched by filters starting with a wildcard [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    let _ = (filter, topic);
    unimplemented!("topic helper")
}
