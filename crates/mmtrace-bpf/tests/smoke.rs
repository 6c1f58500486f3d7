use mmtrace_bpf::{Options, Tracer};
use std::time::Duration;

#[test]
fn smoke() {
    let tracer = Tracer::start(&Options::new(vec![mmtrace_events::by_name("munmap").unwrap()]));
    let mut tracer = match tracer { Ok(t) => t, Err(e) => panic!("{e}") };
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    unsafe { libc::munmap(0x10000 as *mut _, 4096) };
    std::thread::sleep(Duration::from_millis(50));
    let mut mine = vec![];
    tracer.drain(|e| if e.ctx.host_tid == tid { mine.push(e) });
    println!("{mine:#?}");
    assert_eq!(mine.len(), 1);
}
