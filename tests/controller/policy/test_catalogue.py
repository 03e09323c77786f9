"""The software catalogue: processes, installed software and window titles, against the shipped catalogue."""

from __future__ import annotations


import pytest

from controller.policy.catalogue import CatalogueHit, CatalogueMatcher
from controller.policy.loader import load_policy_file
from controller.policy.model import Catalogue, Category
from policies import DEFAULT_POLICY
from protos.counterguard.v1 import facts_pb2


@pytest.fixture(scope="module")
def matcher() -> CatalogueMatcher:
    return CatalogueMatcher(load_policy_file(DEFAULT_POLICY).catalogue)


# ----------------------------------------------------------------------------- processes


@pytest.mark.parametrize("name", ["QQGame.exe", "qqgame.EXE", "QQGAME.exe"])
def test_qqgame_by_process_name_in_any_case(matcher: CatalogueMatcher, name: str) -> None:
    assert matcher.match_process(name, "") == CatalogueHit("qqgame", "QQ游戏", Category.GAME, "executable:qqgame.exe")


def test_a_windows_path_and_a_linux_path(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_process("QQGame", r"C:\Program Files (x86)\Tencent\QQGame\QQGame.exe")
    assert hit is not None and hit.entry_id == "qqgame"

    hit = matcher.match_process("gnome-mines", "/usr/games/gnome-mines")
    assert hit is not None and (hit.entry_id, hit.category) == ("gnome-mines", Category.GAME)


@pytest.mark.parametrize(
    ("name", "entry", "category"),
    [
        ("WeChat.exe", "wechat", Category.CHAT),
        ("Weixin.exe", "wechat", Category.CHAT),
        ("DingTalk.exe", "dingtalk", Category.CHAT),
        ("hexin.exe", "tonghuashun", Category.STOCK),
        ("TdxW.exe", "tongdaxin", Category.STOCK),
        ("cloudmusic.exe", "netease-cloud-music", Category.MUSIC),
        ("QyClient.exe", "iqiyi", Category.VIDEO),
        ("vlc", "vlc", Category.VIDEO),
        ("sol", "aisleriot", Category.GAME),
        ("wps", "wps", Category.OFFICE),
        ("et.exe", "wps", Category.OFFICE),
    ],
)
def test_programs_used_in_china(matcher: CatalogueMatcher, name: str, entry: str, category: Category) -> None:
    hit = matcher.match_process(name, "")
    assert hit is not None and (hit.entry_id, hit.category) == (entry, category)


def test_unknown_programs_are_none(matcher: CatalogueMatcher) -> None:
    assert matcher.match_process("gnome-terminal-server", "/usr/libexec/gnome-terminal-server") is None
    assert matcher.match_process("", "") is None
    assert matcher.match_process("explorer.exe", r"C:\Windows\explorer.exe") is None


# ----------------------------------------------------------------------------- installed software


def test_a_package_in_section_games(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DPKG, "bsdgames", section="games")
    assert hit == CatalogueHit(None, "games", Category.GAME, "section:games")

    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DPKG, "openttd", section="contrib/games")
    assert hit is not None and hit.category is Category.GAME


def test_a_desktop_entry_with_categories_game(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_software(
        facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY, "org.example.Tetris.desktop", categories=["GTK", "Game", "BlocksGame"]
    )
    assert hit == CatalogueHit(None, "Game", Category.GAME, "desktop_category:Game")


def test_the_first_listed_desktop_category_wins(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY, "x.desktop", categories=["AudioVideo", "Audio"])
    assert hit is not None and hit.category is Category.MUSIC


def test_named_entries_win_over_sections_and_categories(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DPKG, "gnome-mines:amd64", section="games")
    assert hit is not None and hit.matched_on == "package:gnome-mines"

    hit = matcher.match_software(
        facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY, "org.gnome.Mines.desktop", categories=["GNOME", "Game", "LogicGame"]
    )
    assert hit is not None and hit.matched_on == "desktop_id:org.gnome.mines"

    # A bookkeeping program says Finance (→ stock); the catalogue knows it is office software.
    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DPKG, "gnucash", categories=["Office", "Finance"])
    assert hit is not None and hit.category is Category.OFFICE


def test_windows_registry_programs_by_display_name_or_executable(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_software(
        facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY, "{52D2A4C6-0E4E-4C0B-9C0E-3E0B5E8D7A11}", display_name="同花顺 9.20"
    )
    assert hit is not None and (hit.entry_id, hit.matched_on) == ("tonghuashun", "display_name:同花顺")

    hit = matcher.match_software(
        facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY, "Steam App 1", display_name="Some Game", publisher="Valve Corporation"
    )
    assert hit is not None and hit.matched_on == "publisher:valve corporation"

    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_WINDOWS_REGISTRY, "KuGou8", executable="KuGou.exe")
    assert hit is not None and hit.entry_id == "kugou"


def test_flatpak_refs_and_software_items(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_software(facts_pb2.SOFTWARE_SOURCE_FLATPAK, "com.valvesoftware.Steam")
    assert hit is not None and hit.entry_id == "steam"

    item = facts_pb2.SoftwareItem(
        source=facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY, name="wechat.desktop", display_name="微信", categories=["Chat"]
    )
    hit = matcher.match_item(item)
    assert hit is not None and (hit.entry_id, hit.category) == ("wechat", Category.CHAT)


def test_unknown_software_is_none(matcher: CatalogueMatcher) -> None:
    assert matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DPKG, "coreutils", section="utils") is None
    assert matcher.match_software(facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY, "org.gnome.Nautilus.desktop",
                                  categories=["GNOME", "GTK", "Utility", "Core", "FileManager"]) is None


# ----------------------------------------------------------------------------- titles


def test_titles(matcher: CatalogueMatcher) -> None:
    hit = matcher.match_title("淘宝网 - 淘！我喜欢 — Mozilla Firefox")
    assert hit == CatalogueHit("taobao", "淘宝", Category.SHOPPING, "title:淘宝")

    hit = matcher.match_title("【哔哩哔哩】 (゜-゜)つロ 干杯~-bilibili - Google Chrome")
    assert hit is not None and hit.category is Category.VIDEO

    hit = matcher.match_title("华为Mate 60【图片 价格 品牌 报价】-京东 - 360安全浏览器")
    assert hit is not None and hit.entry_id == "jd"


def test_ordinary_words_are_not_sites(matcher: CatalogueMatcher) -> None:
    assert matcher.match_title("北京东城区政务服务中心 - 办事指南") is None
    assert matcher.match_title("关于加快手续办理的通知.docx - WPS Office") is None
    assert matcher.match_title("") is None


def test_title_patterns_for_the_agent(matcher: CatalogueMatcher) -> None:
    everything = {p.id: p for p in matcher.title_patterns()}
    assert list(everything["taobao"].title_contains) == ["淘宝", "taobao"]
    assert list(everything["qqgame"].executables) == ["QQGame.exe", "QQGameDl.exe"]
    assert "bookkeeping" in everything  # office entries too, when no category is asked for

    shopping_only = matcher.title_patterns({Category.SHOPPING})
    assert {p.category for p in shopping_only} == {"shopping"}
    assert {p.id for p in shopping_only} == {"taobao", "tmall", "jd", "pinduoduo", "vipshop"}


def test_the_first_entry_naming_a_program_keeps_it() -> None:
    catalogue = Catalogue.model_validate(
        {
            "entries": [
                {"id": "a", "name": "A", "category": "game", "match": {"executables": ["x.exe"]}},
                {"id": "b", "name": "B", "category": "office", "match": {"executables": ["X.EXE"]}},
            ]
        }
    )
    hit = CatalogueMatcher(catalogue).match_process("x.exe")
    assert hit is not None and hit.entry_id == "a"


def test_thousands_of_unknown_names_match_nothing_and_the_known_one_still_matches(matcher: CatalogueMatcher) -> None:
    names = [f"program-{i}.exe" for i in range(5000)]
    titles = [f"文档{i}.docx - WPS Office" for i in range(5000)]
    assert [n for n in names if matcher.match_process(n, rf"C:\Program Files\{n}")] == []
    assert matcher.match_process("QQGame.exe", r"C:\Program Files\QQGame.exe") is not None
    assert {getattr(matcher.match_title(t), "category", None) for t in titles} <= {None, Category.OFFICE}
    assert [i for i in range(5000) if matcher.match_software(
        facts_pb2.SOFTWARE_SOURCE_DPKG, f"lib{i}", display_name=f"library {i}", section="libs")] == []
