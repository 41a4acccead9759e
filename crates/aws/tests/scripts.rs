//! The shell scripts: shellcheck-clean, and the AMI bake's dry run prints
//! the AWS CLI calls of a bake without credentials.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `ami/*.sh` and every shell script of `scripts/` (by extension or
/// shebang).
fn shell_scripts() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["ami", "scripts"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let is_sh = path.extension().is_some_and(|e| e == "sh")
                || std::fs::read(&path)
                    .map(|b| b.starts_with(b"#!/usr/bin/env bash") || b.starts_with(b"#!/bin/bash") || b.starts_with(b"#!/bin/sh"))
                    .unwrap_or(false);
            if is_sh {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    let scripts = shell_scripts();
    assert!(scripts.iter().any(|p| p.ends_with("ami/bake-app-tier.sh")));
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(&scripts)
        .current_dir(repo())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!(
            "shellcheck is not installed ({e}): install it (`apt-get install -y shellcheck`; .ci/run does)"
        ),
    };
    assert!(
        out.status.success(),
        "shellcheck found problems in {scripts:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ami_dry_run_prints_the_bake_calls() {
    for (script, unit) in [
        ("ami/bake-app-tier.sh", "facefleet-app-tier.service"),
        ("ami/bake-web.sh", "facefleet-autoscaler.service"),
    ] {
        let out = Command::new("bash")
            .arg(repo().join(script))
            .args(["--dry-run", "--prefix", "drytest", "--region", "eu-west-1", "--bin-dir", "/nonexistent"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{script}: {stderr}");
        let calls: Vec<&str> = stdout.lines().filter(|l| l.starts_with("aws ")).collect();
        for needle in [
            "ssm get-parameters",
            "/aws/service/canonical/ubuntu/server/24.04/",
            "ec2 run-instances",
            "HttpTokens=required",
            "ec2 wait instance-stopped",
            "ec2 create-image",
            "ec2 terminate-instances",
        ] {
            assert!(calls.iter().any(|c| c.contains(needle)), "{script}: no `{needle}` in\n{stdout}");
        }
        assert!(calls.iter().all(|c| c.starts_with("aws --region eu-west-1 ")), "{stdout}");
        // The last line is the (placeholder) AMI id.
        assert!(stdout.trim_end().lines().last().unwrap().starts_with("ami-"), "{stdout}");
        // The builder installs the unit and never receives credentials.
        assert!(stderr.contains(&format!("systemctl enable {unit}")) || stderr.contains(unit), "{stderr}");
        let all = format!("{stdout}{stderr}");
        for secret in ["AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "AKIA"] {
            assert!(!all.contains(secret), "{script} mentions {secret}");
        }
    }
}

#[test]
fn app_tier_unit_stops_gracefully() {
    let unit = std::fs::read_to_string(repo().join("ami/units/facefleet-app-tier.service")).unwrap();
    assert!(unit.contains("KillSignal=SIGTERM"));
    assert!(unit.contains("TimeoutStopSec="));
    assert!(unit.contains("EnvironmentFile=/etc/facefleet/app-tier.env"));
}
