//! Checks the `protocol!` table (`amqp_proto::METHODS`) against the AMQP 0-9-1 XML definition
//! that RabbitMQ ships, vendored as `amqp-proto/spec/amqp0-9-1.stripped.extended.xml`: ids, names, fields and
//! their types, synchronicity, content, replies and direction. The few places where we
//! deliberately differ from the XML are listed in [`deviations`] and [`rabbitmq_extensions`].

use std::collections::{BTreeMap, HashMap};

use amqp_proto::{METHODS, MethodId, MethodInfo};

/// Compiled in, so the test cannot depend on anything outside the crate.
const SPEC_XML: &str = include_str!("../spec/amqp0-9-1.stripped.extended.xml");

/// One method as the XML describes it, in the shape of [`MethodInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    id: MethodId,
    name: String,
    synchronous: bool,
    carries_content: bool,
    to_client: bool,
    to_server: bool,
    replies: Vec<MethodId>,
    fields: Vec<(String, String)>,
}

impl Expected {
    fn of(info: &MethodInfo) -> Self {
        Expected {
            id: info.id,
            name: info.name.to_owned(),
            synchronous: info.synchronous,
            carries_content: info.carries_content,
            to_client: info.to_client,
            to_server: info.to_server,
            replies: info.replies.to_vec(),
            fields: info
                .fields
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
        }
    }
}

fn id(class_id: u16, method_id: u16) -> MethodId {
    MethodId {
        class_id,
        method_id,
    }
}

/// The Rust type our table uses for each AMQP primitive type.
fn rust_type(primitive: &str) -> &'static str {
    match primitive {
        "octet" => "u8",
        "short" => "u16",
        "long" => "u32",
        "longlong" | "timestamp" => "u64",
        "bit" => "bool",
        "shortstr" => "ShortString",
        "longstr" => "LongString",
        "table" => "FieldTable",
        other => panic!("the XML uses primitive type {other:?}, which the test does not map"),
    }
}

/// Field names as Rust writes them: hyphens become underscores and `type` (a keyword) `kind`.
fn rust_field_name(xml: &str) -> String {
    match xml {
        "type" => "kind".to_owned(),
        other => other.replace('-', "_"),
    }
}

fn attr_u16(node: roxmltree::Node<'_, '_>, name: &str) -> u16 {
    let v = node
        .attribute(name)
        .unwrap_or_else(|| panic!("<{}> without {name}", node.tag_name().name()));
    v.parse()
        .unwrap_or_else(|_| panic!("{name}={v:?} is not a u16"))
}

fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    tag: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.has_tag_name(tag))
}

/// Every method of the XML, keyed by id.
fn parse_spec() -> BTreeMap<MethodId, Expected> {
    let doc = roxmltree::Document::parse(SPEC_XML).expect("the spec XML does not parse");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "amqp");

    let domains: HashMap<&str, &str> = children(root, "domain")
        .map(|d| {
            (
                d.attribute("name").expect("domain without name"),
                d.attribute("type").expect("domain without type"),
            )
        })
        .collect();

    let mut out = BTreeMap::new();
    for class in children(root, "class") {
        let class_name = class.attribute("name").expect("class without name");
        let class_id = attr_u16(class, "index");
        let by_name: HashMap<&str, u16> = children(class, "method")
            .map(|m| {
                (
                    m.attribute("name").expect("method without name"),
                    attr_u16(m, "index"),
                )
            })
            .collect();
        for method in children(class, "method") {
            let method_name = method.attribute("name").expect("method without name");
            let name = format!("{class_name}.{method_name}");
            let method_id = attr_u16(method, "index");
            let chassis: Vec<&str> = children(method, "chassis")
                .map(|c| c.attribute("name").expect("chassis without name"))
                .collect();
            for c in &chassis {
                assert!(
                    matches!(*c, "client" | "server"),
                    "{name}: unknown chassis {c:?}"
                );
            }
            let replies = children(method, "response")
                .map(|r| {
                    let reply = r.attribute("name").expect("response without name");
                    let mid = by_name.get(reply).unwrap_or_else(|| {
                        panic!("{name}: response {reply:?} is not a method of {class_name}")
                    });
                    id(class_id, *mid)
                })
                .collect();
            let fields = children(method, "field")
                .map(|f| {
                    let fname = f.attribute("name").expect("field without name");
                    let primitive = match (f.attribute("type"), f.attribute("domain")) {
                        (Some(t), None) => t,
                        (None, Some(d)) => domains
                            .get(d)
                            .copied()
                            .unwrap_or_else(|| panic!("{name}.{fname}: unknown domain {d:?}")),
                        other => panic!(
                            "{name}.{fname}: needs exactly one of type/domain, has {other:?}"
                        ),
                    };
                    let ty = match (name.as_str(), fname) {
                        // Credentials are long strings whose Debug is redacted.
                        ("connection.start-ok" | "connection.secure-ok", "response") => {
                            "SecretBytes"
                        }
                        _ => rust_type(primitive),
                    };
                    (rust_field_name(fname), ty.to_owned())
                })
                .collect();
            let expected = Expected {
                id: id(class_id, method_id),
                name: name.clone(),
                synchronous: method.attribute("synchronous") == Some("1"),
                carries_content: method.attribute("content") == Some("1"),
                to_client: chassis.contains(&"client"),
                to_server: chassis.contains(&"server"),
                replies,
                fields,
            };
            assert!(
                out.insert(expected.id, expected).is_none(),
                "{name}: duplicate id {class_id}.{method_id} in the XML"
            );
        }
    }
    out
}

/// Where our table deliberately disagrees with the XML.
fn deviations(spec: &mut BTreeMap<MethodId, Expected>) {
    // basic.recover: the XML marks it asynchronous with no response, but RabbitMQ always
    // answers it with basic.recover-ok, so the table makes it synchronous.
    let recover = spec.get_mut(&id(60, 110)).expect("basic.recover in XML");
    assert!(!recover.synchronous && recover.replies.is_empty());
    recover.synchronous = true;
    recover.replies = vec![id(60, 111)];
}

/// RabbitMQ methods the XML lacks (`connection.blocked`/`unblocked`, `update-secret`), as
/// `amqp-proto/spec/README.md` lists them.
fn rabbitmq_extensions() -> Vec<Expected> {
    let f = |n: &str, t: &str| (n.to_owned(), t.to_owned());
    vec![
        Expected {
            id: id(10, 60),
            name: "connection.blocked".into(),
            synchronous: false,
            carries_content: false,
            to_client: true,
            to_server: false,
            replies: vec![],
            fields: vec![f("reason", "ShortString")],
        },
        Expected {
            id: id(10, 61),
            name: "connection.unblocked".into(),
            synchronous: false,
            carries_content: false,
            to_client: true,
            to_server: false,
            replies: vec![],
            fields: vec![],
        },
        Expected {
            id: id(10, 70),
            name: "connection.update-secret".into(),
            synchronous: true,
            carries_content: false,
            to_client: false,
            to_server: true,
            replies: vec![id(10, 71)],
            fields: vec![f("new_secret", "SecretBytes"), f("reason", "ShortString")],
        },
        Expected {
            id: id(10, 71),
            name: "connection.update-secret-ok".into(),
            synchronous: true,
            carries_content: false,
            to_client: true,
            to_server: false,
            replies: vec![],
            fields: vec![],
        },
    ]
}

fn expected_table() -> BTreeMap<MethodId, Expected> {
    let mut spec = parse_spec();
    deviations(&mut spec);
    for ext in rabbitmq_extensions() {
        assert!(
            spec.insert(ext.id, ext.clone()).is_none(),
            "{} is listed as an extension but the XML has it",
            ext.name
        );
    }
    spec
}

#[test]
fn xml_is_complete_enough_to_be_a_useful_reference() {
    let spec = parse_spec();
    // connection 10, channel 6, exchange 8, queue 10, basic 18, tx 6, confirm 2.
    assert_eq!(spec.len(), 60, "unexpected number of methods in the XML");
    assert!(spec.values().all(|m| m.to_client || m.to_server));
}

#[test]
fn every_xml_method_is_in_the_table_with_the_same_facts() {
    let ours: BTreeMap<MethodId, Expected> =
        METHODS.iter().map(|m| (m.id, Expected::of(m))).collect();
    let mut problems = Vec::new();
    for (mid, want) in expected_table() {
        match ours.get(&mid) {
            None => problems.push(format!("missing from the table: {want:?}")),
            Some(got) if *got != want => problems.push(format!(
                "{}:\n  table: {got:?}\n  XML:   {want:?}",
                want.name
            )),
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn table_has_no_method_the_xml_lacks_beyond_the_listed_extensions() {
    let expected = expected_table();
    let extra: Vec<&str> = METHODS
        .iter()
        .filter(|m| !expected.contains_key(&m.id))
        .map(|m| m.name)
        .collect();
    assert!(
        extra.is_empty(),
        "methods neither in the XML nor listed: {extra:?}"
    );
    assert_eq!(METHODS.len(), expected.len());
}

#[test]
fn table_ids_and_names_are_unique() {
    let mut ids = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for m in METHODS {
        assert!(ids.insert(m.id), "duplicate id {:?}", m.id);
        assert!(names.insert(m.name), "duplicate name {}", m.name);
        assert_eq!(amqp_proto::Method::info_for(m.id), Some(m));
    }
}

#[test]
fn replies_point_at_methods_of_the_same_class_going_the_other_way() {
    for m in METHODS {
        for r in m.replies {
            let reply = amqp_proto::Method::info_for(*r)
                .unwrap_or_else(|| panic!("{} lists unknown reply {r:?}", m.name));
            assert_eq!(reply.id.class_id, m.id.class_id, "{}", m.name);
            assert!(
                (m.to_server && reply.to_client) || (m.to_client && reply.to_server),
                "{} -> {}: the reply cannot travel back",
                m.name,
                reply.name
            );
            assert!(
                m.synchronous,
                "{} has replies but is not synchronous",
                m.name
            );
        }
    }
}
