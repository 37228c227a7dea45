//! The encoded descriptor set describes the whole `admit.v1` API, and every
//! element of it is documented.

use admit_proto::{FILE_DESCRIPTOR_SET, PACKAGE, SERVICE_NAMES};
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

#[test]
fn contains_all_files_of_the_package() {
    let set = descriptor_set();
    let mut names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "admit/v1/admin.proto",
            "admit/v1/admit.proto",
            "admit/v1/cluster.proto",
            "admit/v1/types.proto",
        ]
    );
    for file in &set.file {
        assert_eq!(file.package(), PACKAGE, "{}", file.name());
        assert_eq!(file.syntax(), "proto3", "{}", file.name());
    }
}

#[test]
fn contains_the_services_and_their_rpcs() {
    let set = descriptor_set();
    let services: Vec<(String, Vec<&str>)> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service.iter().map(move |s| {
                (
                    format!("{}.{}", f.package(), s.name()),
                    s.method.iter().map(|m| m.name()).collect(),
                )
            })
        })
        .collect();
    let rpcs = |name: &str| {
        services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("service {name} missing; have {services:?}"))
    };
    assert_eq!(
        rpcs("admit.v1.AdmitSend"),
        [
            "Admit",
            "AdmitBatch",
            "Release",
            "RecordInbound",
            "ReportOutcome"
        ]
    );
    assert_eq!(
        rpcs("admit.v1.Admin"),
        [
            "RegisterNumber",
            "RegisterPortfolio",
            "ApplyEvent",
            "GetStatus",
            "ListNumbers",
            "SetPolicy",
            "GetPolicy",
        ]
    );
    assert_eq!(
        rpcs("admit.v1.TestClock"),
        ["SetClock", "AdvanceClock", "GetClock"]
    );
    assert_eq!(
        rpcs("admit.v1.Cluster"),
        ["ListNodes", "ListShards", "AddNode", "RemoveNode"]
    );
    let mut all: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    all.sort_unstable();
    let mut expected = SERVICE_NAMES.to_vec();
    expected.sort_unstable();
    assert_eq!(all, expected, "SERVICE_NAMES lists every service");
}

/// Collects descriptions of elements without a leading or trailing comment.
struct DocCheck<'a> {
    file: &'a FileDescriptorProto,
    missing: Vec<String>,
}

impl DocCheck<'_> {
    fn documented(&self, path: &[i32]) -> bool {
        self.file
            .source_code_info
            .as_ref()
            .expect("descriptor set keeps source info")
            .location
            .iter()
            .any(|l| {
                l.path == path
                    && (!l.leading_comments().trim().is_empty()
                        || !l.trailing_comments().trim().is_empty())
            })
    }

    fn require(&mut self, path: &[i32], what: String) {
        if !self.documented(path) {
            self.missing.push(format!("{}: {what}", self.file.name()));
        }
    }

    // Paths follow descriptor.proto's field numbers: FileDescriptorProto
    // message_type = 4, enum_type = 5, service = 6; DescriptorProto field = 2,
    // nested_type = 3, enum_type = 4, oneof_decl = 8; EnumDescriptorProto
    // value = 2; ServiceDescriptorProto method = 2.
    fn message(&mut self, path: &[i32], m: &DescriptorProto) {
        self.require(path, format!("message {}", m.name()));
        for (i, f) in m.field.iter().enumerate() {
            let p = [path, &[2, i as i32]].concat();
            self.require(&p, format!("field {}.{}", m.name(), f.name()));
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            // Synthetic oneofs of proto3 `optional` fields carry no comment.
            if m.field
                .iter()
                .any(|f| f.oneof_index == Some(i as i32) && f.proto3_optional())
            {
                continue;
            }
            let p = [path, &[8, i as i32]].concat();
            self.require(&p, format!("oneof {}.{}", m.name(), o.name()));
        }
        for (i, n) in m.nested_type.iter().enumerate() {
            self.message(&[path, &[3, i as i32]].concat(), n);
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            self.enumeration(&[path, &[4, i as i32]].concat(), e);
        }
    }

    fn enumeration(&mut self, path: &[i32], e: &EnumDescriptorProto) {
        self.require(path, format!("enum {}", e.name()));
        for (i, v) in e.value.iter().enumerate() {
            let p = [path, &[2, i as i32]].concat();
            self.require(&p, format!("enum value {}", v.name()));
        }
    }
}

#[test]
fn every_element_is_documented() {
    let set = descriptor_set();
    let mut missing = Vec::new();
    for file in &set.file {
        let mut check = DocCheck {
            file,
            missing: Vec::new(),
        };
        for (i, m) in file.message_type.iter().enumerate() {
            check.message(&[4, i as i32], m);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            check.enumeration(&[5, i as i32], e);
        }
        for (i, s) in file.service.iter().enumerate() {
            check.require(&[6, i as i32], format!("service {}", s.name()));
            for (j, m) in s.method.iter().enumerate() {
                check.require(
                    &[6, i as i32, 2, j as i32],
                    format!("rpc {}.{}", s.name(), m.name()),
                );
            }
        }
        missing.extend(check.missing);
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

#[test]
fn enum_zero_values_are_unspecified_or_none() {
    let set = descriptor_set();
    for file in &set.file {
        for e in &file.enum_type {
            let zero = e
                .value
                .iter()
                .find(|v| v.number() == 0)
                .unwrap_or_else(|| panic!("enum {} has no zero value", e.name()));
            assert!(
                zero.name().ends_with("_UNSPECIFIED") || zero.name().ends_with("_NONE"),
                "enum {}: zero value {}",
                e.name(),
                zero.name()
            );
        }
    }
}

#[test]
fn tonic_reflection_accepts_the_descriptor_set() {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection v1 service builds from FILE_DESCRIPTOR_SET");
}
