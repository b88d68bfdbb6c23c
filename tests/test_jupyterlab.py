"JupyterLab from the project's environment: it starts on loopback, serves the notebooks, and its `python3` kernel is this environment's interpreter."
import asyncio, json, os, secrets, socket, subprocess, sys, time, urllib.request, uuid
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def free_port()->int:
    "A TCP port on 127.0.0.1 that nothing listens on now."
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def api(base:str, token:str, path:str, method:str='GET', body:dict|None=None):
    "The JSON answer of the server's REST API at `path` (token in the header)."
    req = urllib.request.Request(f'{base}{path}', method=method, headers={'Authorization': f'token {token}'},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=10) as r: return json.loads(r.read() or b'null')

def wait_for(base:str, token:str, proc, log:Path, timeout:float=60):
    "Poll `/api/status` until the server answers; fail with its log if it exits or does not answer in `timeout` s."
    deadline = time.time() + timeout
    while True:
        try: return api(base, token, '/api/status')
        except OSError: pass
        if proc.poll() is not None: pytest.fail(f'jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}')
        if time.time() > deadline: pytest.fail(f'jupyter lab did not answer in {timeout} s:\n{log.read_text()[-3000:]}')
        time.sleep(0.5)

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server from this environment on 127.0.0.1, rooted at `nbs/`: `(base URL, token)`; stopped afterwards."
    tmp = tmp_path_factory.mktemp('lab')
    port,token,log = free_port(),secrets.token_hex(16),tmp/'lab.log'
    cmd = [BIN/'jupyter', 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={ROOT/"nbs"}'] + (['--allow-root'] if os.geteuid() == 0 else [])
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp/'runtime'), JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'))
    with open(log, 'w') as out: proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f'http://127.0.0.1:{port}'
    try:
        wait_for(base, token, proc, log)
        yield base, token
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()

async def run_code(base:str, token:str, kernel_id:str, code:str, timeout:float=60)->str:
    "Execute `code` in a running kernel over the server's websocket; its printed output."
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect
    url = base.replace('http', 'ws', 1) + f'/api/kernels/{kernel_id}/channels'
    ws = await websocket_connect(HTTPRequest(url, headers={'Authorization': f'token {token}'}))
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps(dict(channel='shell', parent_header={}, metadata={}, buffers=[],
        header=dict(msg_id=msg_id, msg_type='execute_request', session=uuid.uuid4().hex, username='test', version='5.3'),
        content=dict(code=code, silent=False, store_history=False, user_expressions={}, allow_stdin=False))))
    out = []
    try:
        while True:
            m = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
            if m.get('parent_header', {}).get('msg_id') != msg_id: continue
            if m['msg_type'] == 'stream': out.append(m['content']['text'])
            elif m['msg_type'] == 'error': raise AssertionError('\n'.join(m['content']['traceback']))
            elif m['msg_type'] == 'status' and m['content']['execution_state'] == 'idle': return ''.join(out)
    finally: ws.close()

def test_lab_serves_the_notebooks(lab):
    "The server answers, serves the JupyterLab page, and lists the notebooks."
    base,token = lab
    assert 'started' in api(base, token, '/api/status')
    with urllib.request.urlopen(urllib.request.Request(f'{base}/lab', headers={'Authorization': f'token {token}'}), timeout=10) as r:
        assert r.status == 200 and b'JupyterLab' in r.read()
    names = {c['name'] for c in api(base, token, '/api/contents/')['content']}
    assert {'index.ipynb', 'tutorial.ipynb'} <= names, names

def test_python3_kernel_is_this_environment(lab):
    "The default kernelspec is `python3`, and a `python3` kernel started by the server runs this environment's Python."
    base,token = lab
    specs = api(base, token, '/api/kernelspecs')
    assert specs['default'] == 'python3' and 'python3' in specs['kernelspecs'], specs
    k = api(base, token, '/api/kernels', 'POST', {'name': 'python3'})
    try:
        out = asyncio.run(run_code(base, token, k['id'], 'import sys; print(sys.prefix); print(sys.executable)'))
        prefix,exe = out.split()
        assert Path(prefix) == Path(sys.prefix), f'the python3 kernel runs {exe} (prefix {prefix}), not this environment ({sys.prefix})'
    finally: api(base, token, f"/api/kernels/{k['id']}", 'DELETE')

def test_notebooks_name_their_kernel():
    "Every notebook names the `python3` kernel, so JupyterLab opens it without asking for one."
    missing = [p.name for p in sorted((ROOT/'nbs').glob('*.ipynb'))
               if json.loads(p.read_text()).get('metadata', {}).get('kernelspec', {}).get('name') != 'python3']
    assert not missing, f'no python3 kernelspec in {missing}: add "kernelspec": {{"name": "python3", "display_name": "python3", "language": "python"}} to their metadata'
