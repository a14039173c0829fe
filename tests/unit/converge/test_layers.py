"""Package layers without VMs: which packages a script or the apt log names, layer keys,
and the choice per role (a hit, a fallback when the layer cannot be made)."""

from __future__ import annotations

import pytest

from antrieb import events
from antrieb.converge import layers
from antrieb.converge.models import AnsibleArtifacts, ShellArtifacts, Topology
from antrieb.vm import saved


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))


def topo() -> Topology:
    return Topology.model_validate({"nodes": [
        {"name": "lb", "role": "lb"}, {"name": "web1", "role": "web"},
        {"name": "web2", "role": "web"}]})


def shell(**scripts: str) -> ShellArtifacts:
    return ShellArtifacts.model_validate({"tool": "shell", "scripts": scripts})


@pytest.mark.parametrize(("script", "expected"), [
    ("apt-get update\napt-get install -y nginx curl\n", {"nginx", "curl"}),
    ("DEBIAN_FRONTEND=noninteractive apt-get -y -q install \\\n  nginx \\\n  jq\n",
     {"nginx", "jq"}),
    ("apt install -y -o Dpkg::Options::=--force-confold haproxy && systemctl start x",
     {"haproxy"}),
    ("# apt-get install -y nginx\necho hi\n", set()),
    ("apt-get install -y $PKGS\n", set()),  # a variable: no set to key a layer by
    ("apt-get install -y nginx=1.22.1-9\n", set()),
    ("apt-get remove -y nginx\n", set()),
    ("apt-get update && apt-get install -y postgresql-15; echo 'apt is fine'\n",
     {"postgresql-15"}),
])
def test_script_packages(script, expected):
    assert layers.script_packages(script) == expected


def test_logged_packages_counts_only_successful_installs():
    log = ("0 apt-get update -q\n"
           "0 apt-get install -y -q nginx curl\n"
           "100 apt-get install -y nginx-ful\n"
           "0 apt-get -y -o Dpkg::Options::=--force-confold install jq\n")
    assert layers.logged_packages(log) == {"nginx", "curl", "jq"}


def test_layer_names_key_image_build_and_package_set():
    a = layers.layer_name("debian-12", {"nginx", "curl"})
    assert a == layers.layer_name("debian-12", {"curl", "nginx"})
    assert a != layers.layer_name("debian-12", {"nginx"})
    assert a != layers.layer_name("debian-12-ansible", {"nginx", "curl"})
    assert a.startswith("layer-") and len(a) <= 63


def _fake_layer(name: str) -> None:
    saved.finish(saved.create(name), {"kind": "layer", "base": "debian-12"})


def _chosen(run: layers.Layers, iteration: int, artifacts) -> tuple[dict, list]:
    seen: list[events.LayerChosen] = []
    with events.subscribed(lambda e: isinstance(e, events.LayerChosen) and seen.append(e)):
        images, _ = run.images(iteration, topo(), artifacts)
    return images, seen


def test_first_attempt_is_pristine_and_makes_layers_alongside_then_uses_them(monkeypatch):
    built = []

    def fake_build(image, packages, **_):
        built.append((image, frozenset(packages)))
        _fake_layer(layers.layer_name(image, packages))

    monkeypatch.setattr(layers, "build", fake_build)
    run = layers.Layers("r1")
    art = shell(lb="apt-get install -y haproxy\n", web="apt-get install -y nginx\n")
    images, seen = _chosen(run, 1, art)
    assert images == {} and {e.outcome for e in seen} == {"pristine"}
    assert all("making one alongside" in e.reason for e in seen)
    run.observe("web", "0 apt-get install -y nginx\n")
    run.observe("lb", "100 apt-get install -y haproxy\n")  # failed: nothing shown
    images, seen = _chosen(run, 2, art)
    name = layers.layer_name("debian-12", {"nginx"})
    assert images == {"web1": name, "web2": name}  # one layer for both web nodes
    assert sorted(built) == [("debian-12", frozenset({"haproxy"})),
                             ("debian-12", frozenset({"nginx"}))]  # once each
    # used only once an iteration showed the install: haproxy's failed, lb stays pristine
    assert {(e.role, e.outcome) for e in seen} == {("web", "built"), ("lb", "pristine")}
    run.close()
    # a later run of the same packages finds them at once
    images, seen = _chosen(layers.Layers("r2"), 1, art)
    assert images["web1"] == name and {e.outcome for e in seen} == {"hit"}


def test_a_layer_made_alongside_that_failed_falls_back_and_says_why(monkeypatch):
    def fail(image, packages, **_):
        raise RuntimeError("the install failed (100): E: Unable to locate package nginx")

    monkeypatch.setattr(layers, "build", fail)
    run = layers.Layers("r1")
    art = shell(lb="true\n", web="apt-get install -y nginx\n")
    _chosen(run, 1, art)
    run.observe("web", "0 apt-get install -y nginx\n")
    images, seen = _chosen(run, 2, art)
    assert images == {}
    (web,) = [e for e in seen if e.role == "web"]
    assert web.outcome == "pristine" and "Unable to locate package" in web.reason


def test_a_layer_that_cannot_be_made_falls_back_to_the_pristine_golden(monkeypatch):
    def fail(image, packages, **_):
        raise RuntimeError("the install failed (100): E: Unable to locate package nginx")

    monkeypatch.setattr(layers, "build", fail)
    run = layers.Layers("r1")
    run.observe("web", "0 apt-get install -y nginx\n")
    images, seen = _chosen(run, 2, shell(lb="true\n", web="apt-get install -y nginx\n"))
    assert images == {}
    (web,) = [e for e in seen if e.role == "web"]
    assert web.outcome == "pristine" and "Unable to locate package" in web.reason


def test_only_packages_the_current_script_still_installs_are_layered(monkeypatch):
    monkeypatch.setattr(layers, "build", lambda image, packages, **_: _fake_layer(
        layers.layer_name(image, packages)))
    run = layers.Layers("r1")
    run.observe("web", "0 apt-get install -y nginx curl\n")
    images, _ = _chosen(run, 2, shell(lb="true\n", web="apt-get install -y nginx jq\n"))
    assert set(images.values()) == {layers.layer_name("debian-12", {"nginx"})}


def test_ansible_layers_come_from_what_the_nodes_installed_and_the_playbook_names(
        monkeypatch):
    monkeypatch.setattr(layers, "build", lambda image, packages, **_: _fake_layer(
        layers.layer_name(image, packages)))
    run = layers.Layers("r1")
    run.observe("web", "0 apt-get -y install nginx\n0 apt-get -y install ntp\n")
    playbook = AnsibleArtifacts.model_validate({
        "tool": "ansible", "control": "lb",
        "playbook": "- hosts: web\n  tasks:\n    - apt: {name: nginx}\n"})
    images, _ = _chosen(run, 2, playbook)
    assert set(images) == {"web1", "web2"}
    assert set(images.values()) == {layers.layer_name("debian-12", {"nginx"})}


def test_disabled_layers_choose_nothing():
    assert layers.Layers("r1", enabled=False).images(
        2, topo(), shell(lb="true\n", web="apt-get install -y nginx\n")) == ({}, 0.0)


def test_with_images_replaces_only_the_named_nodes():
    t = layers.with_images(topo(), {"web1": "layer-abc"})
    assert [n.image for n in t.nodes] == ["debian-12", "layer-abc", "debian-12"]
    assert layers.with_images(topo(), {}) == topo()
