mod serve_support;
use serve_support::*;
#[test]
#[ignore]
fn hold() {
    let labels = label_file();
    let mut model = test_model();
    model.input_shape = vec![3, 224, 224];
    model.output_shape = vec![1000];
    model.preprocessing.resize_shorter = 256;
    let mut settings = test_settings(labels.path());
    settings.port = 18123;
    settings.max_body_bytes = 64 << 20;
    let _server = TestServer::start(settings, model, FakeBackend::ready_with(150528, 1000));
    std::thread::sleep(std::time::Duration::from_secs(std::env::var("HOLD").unwrap().parse().unwrap()));
}
