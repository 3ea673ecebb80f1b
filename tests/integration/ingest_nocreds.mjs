// relayd without any AWS credentials: ingest still stores events (they
// wait), and the admin API shows publishing as blocked with the reason.
import path from 'node:path';
import { TMP, check, fixture, startRelayd, stopRelayd, webhook, request } from './ingest_lib.mjs';

const r = await startRelayd(path.join(TMP, 'data'), {
  AWS_ACCESS_KEY_ID: '',
  AWS_SECRET_ACCESS_KEY: '',
  HOME: TMP,
  AWS_SHARED_CREDENTIALS_FILE: path.join(TMP, 'no-credentials'),
  AWS_CONFIG_FILE: path.join(TMP, 'no-config'),
});
const body = fixture('message.new');
const res = await webhook(r.port, body, { id: 'nocreds-1' });
check(res.status === 200, `event accepted without AWS credentials (${res.status})`);
const st = JSON.parse((await request(r.adminPort, { method: 'GET', path: '/v1/stats' })).body);
check(st.drainer === 'blocked', `drainer reported blocked (${st.drainer})`);
check(typeof st.last_error === 'string' && st.last_error.startsWith('NoCredentials'),
  `last_error names the missing credentials (${st.last_error})`);
check(st.ready === 1, `the event waits in the queue (ready ${st.ready})`);
const metrics = (await request(r.adminPort, { method: 'GET', path: '/metrics' })).body;
check(/relay_drainer_state\{state="blocked"\} 1/.test(metrics), 'metrics show the drainer blocked');
const exit = await stopRelayd(r);
check(exit.code === 0, `clean exit (${JSON.stringify(exit)})`);
console.log('all checks passed');
