import pytest

from exfm.config import ConfigError, load_config


def test_defaults_validate_and_overrides_apply(tmp_path):
    cfg = load_config(None, ["ray.num_workers=3", "distillation.mode=ah"], env={})
    assert cfg.ray.num_workers == 3
    assert cfg.distillation.mode == "ah"
    assert cfg.s3_endpoint == "http://127.0.0.1:8333"


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("storage:\n  buckett: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert "storage.buckett: unknown key" in str(e.value)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("override,key", [
    ("ray.num_workers=0", "ray.num_workers"),
    ("distillation.mode=bogus", "distillation.mode"),
    ("distillation.ls=0.5", "distillation.ls"),
    ("storage.endpoint=localhost:9000", "storage.endpoint"),
    ("storage.bucket=Bad_Bucket", "storage.bucket"),
    ("vms=[{name: 'Bad Name'}]", "vms.0.name"),
])
def test_bad_values_are_named(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override], env={})
    assert f"{key}:" in str(e.value)



def test_a_vm_of_an_integer_domain_column_may_name_it_as_a_number(tmp_path):
    """The data format allows `domain` to be an integer column; `domain: 0` in params.yaml then
    names its value 0, and selects those rows (slices compare as text)."""
    import pyarrow as pa

    from exfm.data.schema import DatasetSchema
    from exfm.data.slices import vm_slice_filter

    p = tmp_path / "params.yaml"
    p.write_text("vms:\n  - {name: web, model: fam, task: click, domain: 0}\n"
                 "  - {name: app, model: fam, task: click, domain: '1'}\n")
    web, app = load_config(p, env={}).vms
    assert (web.domain, app.domain) == ("0", "1")
    schema = DatasetSchema(name="t", timestamp="ts", domain="surface", labels=["click"])
    table = pa.table({"surface": pa.array([0, 1, 0, 2], pa.int64())})
    assert table.filter(vm_slice_filter(web, schema)).num_rows == 2
    assert table.filter(vm_slice_filter(app, schema)).num_rows == 1
    with pytest.raises(ConfigError, match="vms.0.domain"):
        load_config(None, ["vms=[{name: x, domain: true}]"], env={})

def test_env_overrides_and_secrets_stay_out_of_dump():
    env = {"EXFM_S3_ENDPOINT": "http://10.0.0.5:9000", "EXFM_DATABASE": "postgres",
           "EXFM_DATABASE_URL": "postgresql://u:hunter2@db:5432/x"}
    cfg = load_config(None, ["storage.access_key=AKIA", "storage.secret_key=s3cr3t"], env=env)
    assert cfg.s3_endpoint == "http://10.0.0.5:9000"
    assert cfg.database.kind == "postgres"
    dump = cfg.public_dump()
    text = repr(dump)
    assert "hunter2" not in text and "s3cr3t" not in text and "AKIA" not in text
    assert dump["storage.bucket"] == "exfm"


def test_credentials_come_from_env_before_file(monkeypatch):
    monkeypatch.setenv("EXFM_S3_ACCESS_KEY", "envkey")
    monkeypatch.setenv("EXFM_S3_SECRET_KEY", "envsecret")
    cfg = load_config(None, ["storage.access_key=filekey", "storage.secret_key=filesecret"], env={})
    assert cfg.s3_credentials() == ("envkey", "envsecret")


def test_missing_credentials_is_a_clear_error(tmp_path, monkeypatch):
    for v in ("EXFM_S3_ACCESS_KEY", "EXFM_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(v, raising=False)
    cfg = load_config(None, [f"state_dir={tmp_path}"], env={})
    with pytest.raises(ConfigError, match="exfm stack up"):
        cfg.s3_credentials()


@pytest.mark.parametrize("mode", ["json", "python"])
def test_a_dump_for_a_worker_elsewhere_has_absolute_paths(tmp_path, monkeypatch, mode):
    from exfm.config import ExfmConfig

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["database.kind=postgres",
                             "database.url=postgresql://u:pw@127.0.0.1:5432/exfm"], env={})
    assert cfg.state_dir == ".exfm" and cfg.data.dir and not cfg.data.dir.startswith("/")
    dump = cfg.dump_for_children(mode=mode)
    assert dump["state_dir"] == str(tmp_path / ".exfm")
    assert dump["data"]["dir"] == str((tmp_path / cfg.data.dir).resolve())
    if mode == "python":  # a Ray task's or actor's config: it validates, with the secret intact
        monkeypatch.chdir("/")
        again = ExfmConfig.model_validate(dump)
        assert again.state_path == tmp_path / ".exfm"
        assert again.database.url.get_secret_value() == "postgresql://u:pw@127.0.0.1:5432/exfm"
    else:  # a file for a child process: secrets masked
        assert "pw" not in str(dump["database"]["url"])


def test_a_command_run_below_a_project_says_that_it_uses_the_defaults(tmp_path, monkeypatch):
    """From a sub-folder of a checkout, ./params.yaml is not there: the defaults' relative
    state_dir then names another (empty) stack, which `exfm stack status` reported as down."""
    from click.testing import CliRunner

    from exfm.cli import cli

    (tmp_path / "params.yaml").write_text("state_dir: .exfm\n")
    (tmp_path / "docs").mkdir()
    monkeypatch.delenv("EXFM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path / "docs")
    res = CliRunner().invoke(cli, ["stack", "env"])
    assert res.exit_code == 0, res.output
    assert (f"no params.yaml in {tmp_path / 'docs'}: using the defaults (state_dir "
            f"{tmp_path / 'docs' / '.exfm'}); the project's is {tmp_path / 'params.yaml'}"
            ) in res.stderr
    monkeypatch.chdir(tmp_path)  # at the project's root: nothing to say
    res = CliRunner().invoke(cli, ["stack", "env"])
    assert res.exit_code == 0 and "no params.yaml" not in res.stderr
    monkeypatch.chdir(tmp_path / "docs")  # a chosen config: nothing to say either
    res = CliRunner().invoke(cli, ["stack", "env", "--config", str(tmp_path / "params.yaml")])
    assert res.exit_code == 0 and "no params.yaml" not in res.stderr
