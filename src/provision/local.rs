//! `shell-local`: commands on the build host, with the build's variables in
//! the environment.

use tokio::process::Command;

use super::ProvisionError;
use crate::build::BuildState;
use crate::template::{Commands, ShellLocal};

pub async fn run(label: &str, step: &ShellLocal, state: &BuildState) -> Result<(), ProvisionError> {
    let work_dir = BuildState::require(&state.work_dir, "the work directory")?;
    let scripts = match &step.commands {
        Commands::Inline(lines) => {
            let path = work_dir.join(format!("{}.sh", label.replace(['[', ']'], "-")));
            let body = format!("#!/bin/sh\nset -e\n{}\n", lines.join("\n"));
            crate::build::create_private_file(&path)
                .and_then(|mut file| std::io::Write::write_all(&mut file, body.as_bytes()))
                .map_err(|source| ProvisionError::WriteFile { path: path.display().to_string(), source })?;
            vec![path]
        }
        other => other.files().into_iter().map(|p| p.resolved.clone()).collect(),
    };
    for script in scripts {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(&script).current_dir(&state.loaded.dir).envs(build_env(state)).envs(&step.env);
        let (status, tail) = crate::process::run_streaming(cmd, label, None, &state.report).await?;
        if !status.success() {
            return Err(ProvisionError::ExitStatus {
                what: format!("script {}", script.display()),
                status: status.to_string(),
                tail,
            });
        }
    }
    Ok(())
}

/// The environment a host-side step sees: build identity and template variables.
pub fn build_env(state: &BuildState) -> Vec<(String, String)> {
    let loaded = &state.loaded;
    let t = &loaded.template;
    let mut env = vec![
        ("IMGBUILD_BUILD_ID".to_string(), loaded.build_id.clone()),
        ("IMGBUILD_BUILD_NAME".to_string(), t.name.clone()),
        ("IMGBUILD_TEMPLATE_DIR".to_string(), loaded.dir.display().to_string()),
    ];
    if let crate::template::VersionSpec::Exact(v) = &t.version {
        env.push(("IMGBUILD_BUILD_VERSION".to_string(), v.clone()));
    }
    if let Some(dir) = &state.work_dir {
        env.push(("IMGBUILD_BUILD_DIR".to_string(), dir.display().to_string()));
    }
    for (name, value) in &loaded.variable_values {
        env.push((format!("IMGBUILD_VAR_{name}"), value.clone()));
    }
    env
}
