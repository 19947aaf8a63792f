"""nngraph.study: the study config, the best-combination choice, the report
generated from run folders (and only from them), resume, and the --quick
grid end to end."""
import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from nngraph import study as S
from nngraph import training as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, 'configs', 'study-digits.yaml')


def small_study(tmp_path, **over):
    """A two-model, four-row, two-seed study whose folders live in ``tmp_path``."""
    raw = {
        'name': 'mini', 'runs_dir': str(tmp_path / 'runs'), 'results': str(tmp_path / 'results' / 'mini'),
        'seeds': [0, 1],
        'base': {'data': {'source': 'toy', 'limit': 32, 'batch_size': 8}, 'optim': {'epochs': 2}},
        'models': {'gnn': {'model': {'name': 'gnn'}}, 'flat': {'model': {'name': 'flat'}}},
        'rows': [
            {'name': 'none', 'label': 'no augmentation'},
            {'name': 'perm', 'config': {'transforms': ['RandomNeuronPermutation']}},
            {'name': 'views-2', 'config': {'data': {'views': 2}}},
            {'name': 'mix', 'config': {'transforms': [{'WeightMixUp': {'mode': 'vanilla'}}]}},
            {'name': 'best', 'baseline': 'none', 'best_of': [['perm', 'views-2'], ['mix']]},
        ],
        'curves': ['none'],
    }
    raw.update(over)
    path = tmp_path / 'mini.yaml'
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return S.load_study(str(path))


def fake_run(study, model, row, seed, *, train, val, test, wall=10.0, probe=None):
    """A finished run folder as train.py leaves it (config.yaml + metrics.json)."""
    rows = {r['name']: r for r in study['rows']}
    cfg = S.cell_config(study, model, rows[row], seed)
    run_dir = os.path.join(cfg['out_dir'], cfg['name'])
    T.write_yaml(os.path.join(run_dir, 'config.yaml'), cfg)
    epochs = [{'epoch': e, 'train_acc': train * (e + 1) / 2, 'test_acc': test, 'val_acc': val} for e in range(2)]
    m = {'name': cfg['name'], 'finished': True, 'epochs': epochs, 'best_val_acc': val, 'test_acc': test,
         'train_acc': train, 'last_train_acc': min(1.0, train + 0.05), 'wall_time_s': wall}
    if probe is not None:
        m['probe'], m['probe_random_encoder'] = probe
    T.write_json(os.path.join(run_dir, 'metrics.json'), m)
    return os.path.join(run_dir, 'metrics.json')


def fill(study, val=None):
    """Fake finished runs for every plain cell; ``val[row]`` sets a row's validation accuracy."""
    val = val or {}
    for model, row, seed in S.cells(study):
        fake_run(study, model, row['name'], seed, train=0.9, val=val.get(row['name'], 0.5), test=0.6)


# --------------------------------------------------------------------------- config

def test_shipped_study_loads_and_covers_the_paper_rows():
    study = S.load_study(SHIPPED)
    names = [r['name'] for r in study['rows']]
    for row in ('none', 'views-2', 'views-5', 'views-10', 'permutation', 'sign-flip', 'input-space', 'noise',
                'mixup-vanilla', 'mixup-permute', 'mixup-align', 'mixup-align-signs', 'best', 'ssl', 'ssl-noise'):
        assert row in names
    assert set(study['models']) == {'gnn', 'flat'} and list(study['seeds']) == [0, 1, 2]
    # Every cell's config is a valid train.py config (cell_config validates it).
    for model, row, seed in S.cells(study):
        S.cell_config(study, model, row, seed)
    quick = S.load_study(SHIPPED, quick=True)
    assert quick['name'] != study['name'] and quick['dataset']['out'] != study['dataset']['out']
    assert quick['base']['data']['root'] == quick['dataset']['out']


@pytest.mark.parametrize('row, match', [
    ({'name': 'a', 'colour': 1}, r"row 'a' has unknown keys \['colour'\]"),
    ({'name': 'b', 'best_of': [['nope']], 'baseline': 'none'}, r"row 'b': best_of names unknown rows \['nope'\]"),
    ({'name': 'b', 'best_of': [['none']]}, "row 'b' needs baseline"),
    ({'name': 'c', 'models': ['mlp']}, r"row 'c' names unknown models \['mlp'\]; the study's models are \['gnn'\]"),
])
def test_bad_rows_are_named(tmp_path, row, match):
    path = tmp_path / 's.yaml'
    path.write_text(yaml.safe_dump({'models': {'gnn': {}}, 'rows': [{'name': 'none'}, row]}))
    with pytest.raises(ValueError, match=match):
        S.load_study(str(path))


def test_unknown_study_key_lists_valid_ones(tmp_path):
    path = tmp_path / 's.yaml'
    path.write_text(yaml.safe_dump({'models': {'gnn': {}}, 'rows': [{'name': 'a'}], 'seed': 1}))
    with pytest.raises(ValueError, match=r"unknown study keys \['seed'\].*'seeds'"):
        S.load_study(str(path))
    assert S.main([str(path)]) == 2


def test_bad_row_config_names_the_row(tmp_path):
    study = small_study(tmp_path, rows=[{'name': 'typo', 'config': {'optim': {'lrate': 1}}}], curves=[])
    with pytest.raises(ValueError, match=r"rows\.typo.*optim\.lrate"):
        S.cell_config(study, 'gnn', study['rows'][0], 0)


# --------------------------------------------------------------------------- best combination

def test_best_takes_each_familys_top_row_if_it_beats_the_baseline(tmp_path):
    study = small_study(tmp_path)
    best = study['rows'][-1]
    fill(study, val={'none': 0.5, 'perm': 0.6, 'views-2': 0.7, 'mix': 0.4})
    metrics = S.collect(study)
    assert S.choose_best(study, 'gnn', best, metrics) == ['views-2']     # mix is below the baseline
    fill(study, val={'none': 0.5, 'perm': 0.8, 'views-2': 0.7, 'mix': 0.55})
    metrics = S.collect(study)
    assert S.choose_best(study, 'gnn', best, metrics) == ['perm', 'mix']
    assert S.combined_config(study, ['perm', 'views-2', 'mix']) == {
        'data': {'views': 2}, 'transforms': ['RandomNeuronPermutation', {'WeightMixUp': {'mode': 'vanilla'}}]}
    del metrics[('gnn', 'mix', 1)]
    with pytest.raises(ValueError, match='cell gnn-mix-seed1 is not finished'):
        S.choose_best(study, 'gnn', best, metrics)


# --------------------------------------------------------------------------- report

def test_report_is_generated_from_the_run_folders(tmp_path):
    study = small_study(tmp_path)
    fill(study)
    md_path, png_path = S.write_report(study, 'python -m nngraph.study mini.yaml')
    before = open(md_path).read()
    assert os.path.getsize(png_path) > 0
    assert '| no augmentation | 95.0 ± 0.0 | 90.0 ± 0.0 | 60.0 ± 0.0 | 30.0 ± 0.0 | 10 |' in before
    assert '16 of 20 cells finished' in before        # the best row has not run

    # Edit one run's metrics: the regenerated table shows it, and nothing else changes.
    path = os.path.join(study['runs_dir'], 'mini', 'gnn-none-seed1', 'metrics.json')
    m = json.load(open(path))
    m['test_acc'] = 0.8
    T.write_json(path, m)
    S.write_report(study, 'python -m nngraph.study mini.yaml')
    after = open(md_path).read()
    assert '| no augmentation | 95.0 ± 0.0 | 90.0 ± 0.0 | 70.0 ± 14.1 | 20.0 ± 14.1 | 10 |' in after
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith('| no augmentation |')

    # An unfinished run is not counted.
    m['finished'] = False
    T.write_json(path, m)
    S.write_report(study)
    assert '| no augmentation | 95.0 | 90.0 | 60.0 | 30.0 | 10 |' in open(md_path).read()


def test_published_figures_stand_beside_their_rows(tmp_path):
    study = small_study(tmp_path)
    study['rows'][1]['published'] = '22.76 ± 0.13 (DWSNets)'
    fill(study)
    md = open(S.write_report(study)[0]).read()
    assert any(line.startswith('| row |') and line.endswith('| published test |') for line in md.splitlines())
    perm = next(line for line in md.splitlines() if line.startswith('| perm |'))
    assert perm.endswith('| 22.76 ± 0.13 (DWSNets) |')
    none = next(line for line in md.splitlines() if line.startswith('| no augmentation |'))
    assert none.endswith('|  |')             # rows without a published figure: an empty cell


def test_report_of_a_contrastive_row_shows_the_untrained_encoder(tmp_path):
    study = small_study(tmp_path, rows=[{'name': 'ssl', 'label': 'contrastive'}], curves=[])
    for model, row, seed in S.cells(study):
        fake_run(study, model, 'ssl', seed, train=0, val=0, test=0, probe=(
            {'train_acc': 0.9, 'val_acc': 0.8, 'test_acc': 0.7},
            {'train_acc': 0.5, 'val_acc': 0.4, 'test_acc': 0.3}))
    md = open(S.write_report(study)[0]).read()
    # a probe's fit is its training accuracy: the probe is fitted once, to the end
    assert '| contrastive | 90.0 ± 0.0 | 90.0 ± 0.0 | 70.0 ± 0.0 | 20.0 ± 0.0 |' in md
    assert '| contrastive: same encoder untrained | 50.0 ± 0.0 | 50.0 ± 0.0 | 30.0 ± 0.0 | 20.0 ± 0.0 |' in md


# --------------------------------------------------------------------------- resume

def test_finished_cells_with_the_same_config_are_skipped(tmp_path):
    study = small_study(tmp_path)
    fill(study)
    configs = [S.cell_config(study, m, r, s) for m, r, s in S.cells(study)]
    assert S._pending(study, configs) == []
    # A changed row config makes its cells pending again, and only those.
    study['rows'][1]['config'] = {'transforms': [{'RandomSignFlip': {'p': 0.5}}]}
    configs = [S.cell_config(study, m, r, s) for m, r, s in S.cells(study)]
    assert sorted(c['name'] for c in S._pending(study, configs)) == [
        'flat-perm-seed0', 'flat-perm-seed1', 'gnn-perm-seed0', 'gnn-perm-seed1']


@pytest.mark.slow
def test_quick_grid_end_to_end(tmp_path, monkeypatch):
    """The shipped --quick grid: dataset, every cell as a train.py run folder,
    the best row, the report; a second call runs nothing."""
    study = S.load_study(SHIPPED, quick=True)
    study['runs_dir'] = str(tmp_path / 'runs')
    study['results'] = str(tmp_path / 'report')
    study['dataset']['out'] = study['base']['data']['root'] = str(tmp_path / 'data')
    assert S.run_study(study, progress=False) == []

    root = tmp_path / 'runs' / study['name']
    n_plain = len(S.cells(study))
    for model, row, seed in S.cells(study) + S.cells(study, best=True):
        run = root / S.cell_name(model, row['name'], seed)
        assert {'config.yaml', 'metrics.json', 'checkpoint.pt'} <= set(os.listdir(run)), run
        assert (root / 'configs' / f'{run.name}.yaml').exists()
    selection = json.loads((root / 'selection.json').read_text())
    assert set(selection) == set(study['models'])
    md = (tmp_path / 'report.md').read_text()
    n_cells = n_plain + len(S.cells(study, best=True))
    assert f'{n_cells} of {n_cells} cells finished' in md
    # The header, a line per row, and a line per contrastive row for its untrained encoder.
    contrastive = [r for r in study['rows'] if r.get('config', {}).get('mode') == 'contrastive+probe']
    assert contrastive and md.count('\n| ') == 1 + len(study['rows']) + len(contrastive)
    assert (tmp_path / 'report.png').stat().st_size > 0

    # Any cell re-runs alone from its saved config.
    config = root / 'configs' / 'flat-none-seed0.yaml'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--config', str(config), '--quiet',
                        '--overwrite'], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]

    # The study resumes: every cell is finished with an unchanged config, so nothing runs.
    monkeypatch.setattr(S.subprocess, 'call', lambda *a, **k: pytest.fail(f'cell re-ran: {a}'))
    assert S.run_study(study, progress=False) == []


CALIBRATION = os.path.join(ROOT, 'configs', 'study-fmnist-calibration.yaml')
HAVE_FMNIST = os.path.isfile('/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz') or \
    bool(os.environ.get('NNGRAPH_FASHION_MNIST_DIR'))


def test_shipped_calibration_study_sets_published_figures_beside_each_baseline():
    study = S.load_study(CALIBRATION)
    rows = {r['name']: r for r in study['rows']}
    assert set(rows) == {'flat', 'flat-perm', 'statnn', 'aligned', 'aligned-signs', 'gnn', 'gnn-long',
                         'gnn-wide', 'gnn-deep', 'gnn-probes'}
    assert {n: r.get('published') for n, r in rows.items() if r.get('published')} == {
        'flat': '19.91 ± 0.47', 'flat-perm': '22.76 ± 0.13', 'aligned': '47.79 ± 1.03',
        **{n: '68.0 (NG-GNN); ScaleGMN-B 80.78' for n in ('gnn', 'gnn-long', 'gnn-wide', 'gnn-deep')},
        'gnn-probes': '74.2 (NG-GNN + 64 probes)'}
    names = set()
    for model, row, seed in S.cells(study):
        cfg = S.cell_config(study, model, row, seed)
        names.add(cfg['model']['name'])
        assert cfg['data']['source'] == 'fashion-mnist' and cfg['data']['root'] == study['dataset']['out']
    assert names == {'flat', 'statnn', 'aligned_mlp', 'gnn'}
    # the long GNN rows run on their own seeds; every other row on the grid's
    assert [S.row_seeds(study, rows[n]) for n in ('gnn', 'gnn-probes', 'flat')] == [[0], [0, 1, 2], [0, 1, 2]]
    quick = S.load_study(CALIBRATION, quick=True)
    assert len(S.cells(quick)) == len(quick['rows'])        # one seed per row, own seeds or not
    assert quick['dataset']['out'] == quick['base']['data']['root'] != study['dataset']['out']
    assert quick['results'] != study['results'] and quick['dataset']['limit']


def test_a_row_runs_only_for_the_models_it_names(tmp_path):
    path = tmp_path / 's.yaml'
    path.write_text(yaml.safe_dump({'models': {'gnn': {}, 'flat': {'model': {'name': 'flat'}}}, 'seeds': [0, 1],
                                    'rows': [{'name': 'none'}, {'name': 'perm', 'models': ['flat']}]}))
    study = S.load_study(str(path))
    assert sorted((m, r['name'], s) for m, r, s in S.cells(study)) == [
        ('flat', 'none', 0), ('flat', 'none', 1), ('flat', 'perm', 0), ('flat', 'perm', 1),
        ('gnn', 'none', 0), ('gnn', 'none', 1)]


FMNIST_STUDY = os.path.join(ROOT, 'configs', 'study-fmnist.yaml')


def test_shipped_fmnist_study_is_the_low_data_grid_of_the_paper():
    study = S.load_study(FMNIST_STUDY)
    rows = {r['name']: r for r in study['rows']}
    for row in ('none', 'views-2', 'views-5', 'views-10', 'objects-100', 'objects-250', 'objects-500',
                'permutation', 'sign-flip', 'input-space', 'noise', 'mixup-vanilla', 'mixup-permute',
                'mixup-align', 'mixup-align-signs', 'best', 'ssl', 'ssl-noise', 'fold', 'sign-flip-fold',
                'ssl-views', 'ssl-views-plain', 'ssl-views-t05'):
        assert row in rows
    d = study['dataset']
    views, objects = d['views'], d['objects_per_class']['train']
    for model, row, seed in S.cells(study):
        cfg = S.cell_config(study, model, row, seed)
        data = cfg['data']
        assert data['source'] == 'fashion-mnist' and data['root'] == d['out']
        # every cell reads only INRs the build fits
        assert data['views'] <= views and data['objects_per_class'] <= objects
        assert data['views'] == 1 or data['objects_per_class'] <= d['views_objects_per_class']
        if model == 'gnn':     # the weight-only GNN: no probe features, sign-canonical
            assert cfg['model']['probe_points'] == 0 and cfg['model']['canonical_signs'] == 'out'
        else:
            assert cfg['model']['name'] == 'aligned_mlp' and cfg['model']['align_signs']
    # the same number of training graphs in every supervised cell of a model; the GNN trains
    # longer (it underfits at the aligned MLP's budget)
    sizes = {}
    for m, r, s in S.cells(study):
        if r.get('config', {}).get('mode') is None:
            cfg = S.cell_config(study, m, r, s)
            sizes.setdefault(m, set()).add(cfg['data']['samples_per_epoch'] * cfg['optim']['epochs'])
    assert sizes == {'gnn': {40000}, 'aligned': {30000}}
    assert {m for m, r, s in S.cells(study) if r['name'] == 'permutation'} == {'aligned'}
    assert {m for m, r, s in S.cells(study) if r['name'].startswith(('ssl', 'fold', 'sign-flip-fold'))} == {'gnn'}
    views = [S.cell_config(study, 'gnn', rows[r], 0) for r in ('ssl-views', 'ssl-views-plain')]
    assert all(c['contrastive']['positives'] == 'views' and c['data']['views'] == 10 for c in views)
    quick = S.load_study(FMNIST_STUDY, quick=True)
    assert quick['dataset']['out'] == quick['base']['data']['root'] != d['out']
    assert quick['results'] != study['results'] and len(quick['seeds']) == 1


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FMNIST, reason='apt-get install -y dataset-fashion-mnist')
def test_quick_fmnist_study_end_to_end(tmp_path):
    """The FMNIST study's --quick grid: the subset build (views for the first
    objects only), every cell, the best row, the report."""
    study = S.load_study(FMNIST_STUDY, quick=True)
    study['runs_dir'] = str(tmp_path / 'runs')
    study['results'] = str(tmp_path / 'report')
    study['dataset']['out'] = study['base']['data']['root'] = str(tmp_path / 'data')
    assert S.run_study(study, progress=False) == []
    n = len(S.cells(study)) + len(S.cells(study, best=True))
    md = (tmp_path / 'report.md').read_text()
    assert f'{n} of {n} cells finished' in md
    assert 'Build: 220 train INRs of 40 images / 10 val INRs of 10 images / 10 test INRs' in md
    line = next(x for x in md.splitlines() if x.startswith('| neuron permutation |'))
    cols = [c.strip() for c in line.strip('|').split('|')][1:]
    assert cols[:5] == ['—'] * 5 and '—' not in cols[5:]     # the GNN does not run it, the aligned MLP does
    assert (tmp_path / 'report.png').stat().st_size > 0


def test_notes_are_printed_under_the_table(tmp_path):
    study = small_study(tmp_path, notes='Published figures: DWSNets, Table 1.')
    fill(study)
    md = open(S.write_report(study)[0]).read()
    assert md.rstrip().endswith('Published figures: DWSNets, Table 1.')


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FMNIST, reason='apt-get install -y dataset-fashion-mnist')
def test_quick_calibration_end_to_end(tmp_path):
    """The calibration's --quick grid: a Fashion-MNIST slice built with the
    DWSNets preset, every baseline trained, the report beside the published figures."""
    study = S.load_study(CALIBRATION, quick=True)
    study['runs_dir'] = str(tmp_path / 'runs')
    study['results'] = str(tmp_path / 'report')
    study['dataset']['out'] = study['base']['data']['root'] = str(tmp_path / 'data')
    assert S.run_study(study, progress=False) == []
    md = (tmp_path / 'report.md').read_text()
    assert '10 of 10 cells finished' in md
    line = next(x for x in md.splitlines() if x.startswith('| MLP + permutation augmentation |'))
    assert line.endswith('| 22.76 ± 0.13 |') and '—' not in line
    line = next(x for x in md.splitlines() if x.startswith('| GNN, weights only'))
    assert line.endswith('| 68.0 (NG-GNN); ScaleGMN-B 80.78 |') and '—' not in line


def test_published_figures_are_marked_in_the_figure_by_their_leading_number():
    assert S._leading_number('47.79 ± 1.03') == 47.79
    assert S._leading_number('22.76') == 22.76
    assert S._leading_number(None) is None and S._leading_number('n/a') is None


def test_a_config_key_added_since_does_not_make_finished_cells_stale(tmp_path):
    cfg = T.merge_config(T.DEFAULTS, {'model': {'name': 'flat'}})
    saved = copy.deepcopy(cfg)
    del saved['model']['canonical_signs']           # a run from before the key existed
    T.write_yaml(str(tmp_path / 'config.yaml'), saved)
    assert S._same_config(str(tmp_path), cfg)
    changed = T.merge_config(cfg, {'model': {'canonical_signs': 'out'}})
    assert not S._same_config(str(tmp_path), changed)


def test_how_a_cell_runs_does_not_make_it_stale(tmp_path):
    cfg = T.merge_config(T.DEFAULTS, {'model': {'name': 'flat'}})
    T.write_yaml(str(tmp_path / 'config.yaml'), cfg)
    assert S._same_config(str(tmp_path), T.merge_config(cfg, {'compile': True}))
    assert not S._same_config(str(tmp_path), T.merge_config(cfg, {'seed': 1}))


def test_quick_cells_run_eagerly(tmp_path):
    full = S.load_study(CALIBRATION)
    assert any(S.cell_config(full, m, r, s)['compile'] for m, r, s in S.cells(full))
    quick = S.load_study(CALIBRATION, quick=True)
    assert not any(S.cell_config(quick, m, r, s)['compile'] for m, r, s in S.cells(quick))
    # compile set where a cell's config starts (base) or in a model's update
    for over in ({'base': {'compile': True}}, {'models': {'gnn': {'compile': True}}}):
        path = tmp_path / 'compiled.yaml'
        path.write_text(yaml.safe_dump({'models': {'gnn': {}}, 'rows': [{'name': 'none'}], **over}))
        full, quick = S.load_study(str(path)), S.load_study(str(path), quick=True)
        assert all(S.cell_config(full, m, r, s)['compile'] for m, r, s in S.cells(full))
        assert not any(S.cell_config(quick, m, r, s)['compile'] for m, r, s in S.cells(quick))
