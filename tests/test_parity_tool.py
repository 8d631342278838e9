"""``python -m tools.parity`` on the public diffusion fixture: every group is reproduced and passes.

The diffusion check is memoised per fixture content, so when
``test_diffusion_loops.py`` ran first in the same pytest process this reuses its run.
"""

import re

from conftest import require_fixture

from tools import parity


def test_parity_tool_on_diffusion_fixture(capsys):
    path = require_fixture("diffusion/diffusion.npz")
    # Whole loops drift more than single steps (the fixtures' README.md: ~5e-5 between two kernel choices;
    # 7.5e-5 measured here): same loop tolerance as test_diffusion_loops.py, default 1e-4 elsewhere.
    rc = parity.main([str(path), "--loop-atol", "2e-4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "parity: passed" in out
    rows = {name: status for status, name in re.findall(r"^  (ok  |FAIL) (\S+)", out, flags=re.M)}
    assert rows and all(v == "ok  " for v in rows.values())
    for group in ("ddim_cfg", "p_cfg", "inpaint_ddim"):
        for name in (f"loop/{group}", f"loop/{group}_steps", f"loop/{group}_steps_tf", f"steps_tf/{group}:cond"):
            assert name in rows, name
    for name in ("clipguide/sample:cond", "clipguide/grad", "full/p_sample", "s27/ddim_sample_eta05",
                 "full/p_pred_xstart_noclip:scaled", "loss100/rescaled_mse/vb:scaled", "respace/fast27",
                 "betas/linear"):
        assert name in rows, name
