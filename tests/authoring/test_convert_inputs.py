"""``filters convert`` never reports success on input it could not read whole."""

from __future__ import annotations

from privsepd.authoring.cli import main


def _conf(tmp_path, *dirs: str):
    conf = tmp_path / "rootwrap.conf"
    conf.write_text(f"[DEFAULT]\nfilters_path={','.join(dirs)}\nexec_dirs=/bin,/usr/bin\n")
    return conf


def test_convert_of_a_conf_whose_filters_dirs_are_missing_warns_and_exits_1(tmp_path, capsys):
    conf = _conf(tmp_path, str(tmp_path / "nope"), str(tmp_path / "gone"))
    assert main(["convert", str(conf)]) == 1
    err = capsys.readouterr().err
    assert f"warning: {conf}: filters_path directory {tmp_path / 'nope'} does not exist" in err
    assert f"filters_path directory {tmp_path / 'gone'} does not exist" in err
    assert "nothing to convert" in err


def test_convert_with_one_missing_filters_dir_converts_the_rest_and_exits_1(tmp_path, capsys):
    good = tmp_path / "rootwrap.d"
    good.mkdir()
    (good / "a.filters").write_text("[Filters]\ncat: CommandFilter, /bin/cat, root\n")
    conf = _conf(tmp_path, str(good), str(tmp_path / "gone"))
    assert main(["convert", str(conf)]) == 1
    out, err = capsys.readouterr()
    assert "name = 'cat'" in out
    assert "1 converted" in err
    assert f"filters_path directory {tmp_path / 'gone'} does not exist" in err


def test_convert_of_a_conf_whose_filters_dirs_exist_exits_0(tmp_path, capsys):
    good = tmp_path / "rootwrap.d"
    good.mkdir()
    (good / "a.filters").write_text("[Filters]\ncat: CommandFilter, /bin/cat, root\n")
    assert main(["convert", str(_conf(tmp_path, str(good)))]) == 0
    assert "does not exist" not in capsys.readouterr().err


def test_convert_of_an_empty_directory_has_nothing_to_convert_and_exits_1(tmp_path, capsys):
    assert main(["convert", str(tmp_path)]) == 1
    assert "nothing to convert" in capsys.readouterr().err
